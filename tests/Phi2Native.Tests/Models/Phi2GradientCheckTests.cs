using NUnit.Framework;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Models;

/// <summary>The whole model's backward in double precision against finite differences, in training mode with dropout.</summary>
[TestFixture]
public class Phi2GradientCheckTests
{
    [Test]
    public void EveryParameterKindMatchesFiniteDifferences()
    {
        var config = Phi2Config.Tiny with
        {
            VocabSize = 23, HiddenSize = 20, IntermediateSize = 28, NumHiddenLayers = 2, NumAttentionHeads = 2, RotaryDim = 6,
            ResidPdrop = 0.2, EmbdPdrop = 0.1,
        };
        using var model = Phi2Model.CreateRandom(config, GradientCheck.Backend, seed: 11, DType.F64);
        // Random init has zero biases and unit LayerNorms; perturb every parameter so each one matters.
        var random = new Random(5);
        foreach (var parameter in model.Parameters())
        {
            var values = Phi2Native.Backends.Cpu.CpuBackend.Span<double>(parameter);
            for (int i = 0; i < values.Length; i++) values[i] += 0.3 * (random.NextDouble() - 0.5);
        }
        model.SetRequiresGrad(true);
        model.Training = true;
        int[] ids = [0, 5, 22, 5, 9, 13, 1, 2];
        // Every evaluation must see the same dropout masks: reset the seed and the forward counter each time.
        ulong seed = 99;
        Tensor Loss()
        {
            model.DropoutSeed = seed;
            model.ResetDropoutCounter();
            var logits = model.Forward(model.CreateInputIds(ids, batch: 2));
            return model.CausalLanguageModelLoss(logits, ids);
        }
        var sampled = model.Parameters().ToList();
        GradientCheck.Check("Phi2Model", Loss, sampled, samplesPerInput: 6);
    }
}
