using NUnit.Framework;
using Phi2Native.Autograd;
using Phi2Native.Autograd.Ops;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Autograd;

/// <summary>The tape's rules: what is recorded, how gradients accumulate, what a frozen branch costs, when memory is freed.</summary>
[TestFixture]
public class GradientTapeTests
{
    private static readonly Phi2Config Small = Phi2Config.Tiny with { VocabSize = 50, HiddenSize = 32, IntermediateSize = 40, NumHiddenLayers = 3, NumAttentionHeads = 2, RotaryDim = 6 };

    private static (double Loss, int Recorded, int BackwardRun) Step(Phi2Model model, int[] ids)
    {
        using var scope = TensorScope.Begin();
        using var tape = GradientTape.Begin();
        var loss = model.CausalLanguageModelLoss(model.Forward(model.CreateInputIds(ids)), ids);
        tape.Backward(loss);
        return (loss.Item(), tape.Ops.Count, tape.BackwardOpsRun);
    }

    [Test]
    public void ParameterGradientsAccumulateAcrossBackwardPasses()
    {
        using var model = Phi2Model.CreateRandom(Small, GradientCheck.Backend, seed: 3);
        model.SetRequiresGrad(true);
        int[] ids = [1, 5, 9, 2, 33];
        Step(model, ids);
        var once = model.LmHead.Weight.Grad!.ToSingleArray();
        Step(model, ids);
        var twice = model.LmHead.Weight.Grad!.ToSingleArray();
        TensorAssert.Close("2 x lm_head grad", once.Select(g => 2 * g).ToArray(), twice, Tolerance.Forward(DType.F32));
        model.LmHead.Weight.ZeroGrad();
        Assert.That(model.LmHead.Weight.Grad, Is.Null);
    }

    [Test]
    public void FrozenLayersBelowTheLowestTrainableOneCostNoBackwardWork()
    {
        using var model = Phi2Model.CreateRandom(Small, GradientCheck.Backend, seed: 4);
        int[] ids = [3, 4, 5, 6];
        model.SetRequiresGrad(true);
        var all = Step(model, ids);
        model.SetRequiresGrad(false);
        model.LmHead.SetRequiresGrad(true);
        var headOnly = Step(model, ids);
        // Only lm_head's Linear, the reshape of the logits and the loss are recorded.
        Assert.That(headOnly.Recorded, Is.EqualTo(3));
        Assert.That(headOnly.BackwardRun, Is.EqualTo(3));
        Assert.That(all.BackwardRun, Is.GreaterThan(10 * headOnly.BackwardRun));
        Assert.That(headOnly.Loss, Is.EqualTo(all.Loss).Within(1e-6));
        foreach (var parameter in model.Parameters())
            if (!parameter.Name!.StartsWith("lm_head", StringComparison.Ordinal)) parameter.ZeroGrad();
        model.SetRequiresGrad(false);
        model.Layers[2].SetRequiresGrad(true);
        var topLayer = Step(model, ids);
        Assert.That(model.Layers[1].Parameters().All(p => p.Grad == null), Is.True, "frozen parameters get no gradient");
        Assert.That(model.EmbedTokens.Weight.Grad, Is.Null);
        Assert.That(topLayer.BackwardRun, Is.LessThan(all.BackwardRun / 2));
    }

    [Test]
    public void NothingIsRecordedWithoutATapeOrWithoutTrainableInputs()
    {
        using var model = Phi2Model.CreateRandom(Small, GradientCheck.Backend, seed: 5);
        model.SetRequiresGrad(true);
        using (TensorScope.Begin())
        {
            var logits = model.Forward(model.CreateInputIds([1, 2, 3]));
            Assert.That(logits.RequiresGrad, Is.False, "no tape: inference");
        }
        model.SetRequiresGrad(false);
        using (TensorScope.Begin())
        using (var tape = GradientTape.Begin())
        {
            var ids = new[] { 1, 2, 3 };
            var loss = model.CausalLanguageModelLoss(model.Forward(model.CreateInputIds(ids)), ids);
            Assert.That(tape.Ops, Is.Empty);
            Assert.Throws<InvalidOperationException>(() => tape.Backward(loss));
        }
    }

    [Test]
    public void ScopeFreesEverythingButWhatIsKept()
    {
        var backend = GradientCheck.Backend;
        Tensor inner, kept;
        using (var outer = TensorScope.Begin())
        {
            using (var scope = TensorScope.Begin())
            {
                inner = backend.Zeros([4], DType.F32);
                kept = scope.Keep(backend.Zeros([4], DType.F32));
            }
            Assert.That(inner.IsDisposed, Is.True);
            Assert.That(kept.IsDisposed, Is.False);
            Assert.That(outer.Count, Is.EqualTo(1), "a kept tensor moves to the enclosing scope");
        }
        Assert.That(kept.IsDisposed, Is.True);
        Assert.Throws<ObjectDisposedException>(() => inner.ToArray<float>());
    }

    [Test]
    public void ReshapedViewsKeepMemoryAliveUntilTheLastIsDisposed()
    {
        var backend = GradientCheck.Backend;
        var tensor = backend.FromBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(new float[] { 1, 2, 3, 4, 5, 6 }.AsSpan()), DType.F32, [2, 3], DType.F32);
        var view = tensor.Reshape(3, -1);
        Assert.That(view.Shape.ToArray(), Is.EqualTo(new[] { 3, 2 }));
        tensor.Dispose();
        Assert.That(view.ToArray<float>(), Is.EqualTo(new float[] { 1, 2, 3, 4, 5, 6 }));
        view.Dispose();
        Assert.That(view.Storage.IsReleased, Is.True);
        Assert.Throws<ArgumentException>(() => backend.Zeros([2, 3], DType.F32).Reshape(4, 2));
    }
}
