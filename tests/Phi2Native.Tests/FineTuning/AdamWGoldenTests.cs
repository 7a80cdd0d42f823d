using System.Globalization;
using NUnit.Framework;
using Phi2Native.Backends.Cpu;
using Phi2Native.FineTuning;
using Phi2Native.FineTuning.Optim;
using Phi2Native.IO;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.FineTuning;

/// <summary>
/// Three training steps (fixed gradients, clip_grad_norm_, cosine-with-warmup learning rate, AdamW with weight decay
/// on the weight only) against torch.optim.AdamW: tests/fixtures/make_golden_adamw.py.
/// </summary>
[TestFixture]
public class AdamWGoldenTests
{
    private const string Hint = "regenerate with: /usr/bin/python3 tests/fixtures/make_golden_adamw.py";

    [TestCase(DType.F32)]
    [TestCase(DType.F64)]
    public void ThreeClippedScheduledStepsMatchTorch(DType dtype)
    {
        using var golden = Fixtures.OpenGolden("adamw");
        var meta = golden.Metadata;
        double Number(string key) => double.Parse(meta[key], CultureInfo.InvariantCulture);
        double[] Numbers(string key) => meta[key].Split(',').Select(x => double.Parse(x, CultureInfo.InvariantCulture)).ToArray();
        var backend = new CpuBackend(poisonNewMemory: true);
        var names = golden.Tensors.Select(t => t.Name).Where(n => n.StartsWith("initial.", StringComparison.Ordinal)).Select(n => n["initial.".Length..]).ToArray();
        Assert.That(names, Has.Length.EqualTo(3), Hint);
        var parameters = names.Select(n => Load(golden, backend, "initial." + n, dtype, n)).ToArray();
        try
        {
            var options = new AdamWOptions
            {
                LearningRate = Number("lr"), Beta1 = Number("beta1"), Beta2 = Number("beta2"),
                Epsilon = Number("eps"), WeightDecay = Number("weight_decay"),
            };
            using var optimizer = new AdamW(parameters, options);
            Assert.That(parameters.Where(optimizer.AppliesWeightDecay).Select(p => p.Name), Is.EquivalentTo(meta["decayed"].Split(',')),
                "the default weight-decay rule picks what the fixture decays (HF: not biases, not LayerNorm)");
            var schedule = LearningRateSchedule.CosineWithWarmup((int)Number("warmup_steps"), (int)Number("training_steps"), Number("num_cycles"));
            double[] learningRates = Numbers("lr_per_step"), norms = Numbers("grad_norm_per_step");
            int steps = (int)Number("steps");
            for (int step = 0; step < steps; step++)
            {
                foreach (var parameter in parameters)
                {
                    // The same gradient each step, fresh: clipping scaled the previous copy in place.
                    parameter.ZeroGrad();
                    parameter.Grad = Load(golden, backend, "grad." + parameter.Name, dtype, null);
                }
                double norm = GradientClipping.ClipGradientsByGlobalNorm(parameters, Number("max_grad_norm"));
                TensorAssert.Close($"global gradient norm before step {step + 1}", [norms[step]], [norm], Tolerance.Optimizer(dtype), Hint);
                optimizer.LearningRate = options.LearningRate * schedule.Factor(optimizer.StepCount);
                Assert.That(optimizer.LearningRate, Is.EqualTo(learningRates[step]).Within(1e-15), $"learning rate of step {step + 1}");
                optimizer.Step();
            }
            Assert.That(optimizer.StepCount, Is.EqualTo(steps));

            var state = optimizer.SaveState();
            try
            {
                foreach (var parameter in parameters)
                {
                    string name = parameter.Name!;
                    Assert.That(state[AdamW.ParameterStepPrefix + name].ToArray<int>(), Is.EqualTo(new[] { steps }), $"{name}: its own step count");
                    TensorAssert.Close($"final.{name} ({dtype})", golden.ReadAsSingle("final." + name), parameter.ToSingleArray(), Tolerance.Optimizer(dtype), Hint);
                    TensorAssert.Close($"exp_avg.{name} ({dtype})", golden.ReadAsSingle("exp_avg." + name), state[AdamW.FirstMomentPrefix + name].ToSingleArray(), Tolerance.Optimizer(dtype), Hint);
                    TensorAssert.Close($"exp_avg_sq.{name} ({dtype})", golden.ReadAsSingle("exp_avg_sq." + name), state[AdamW.SecondMomentPrefix + name].ToSingleArray(), Tolerance.Optimizer(dtype), Hint);
                }
            }
            finally
            {
                foreach (var tensor in state.Values) tensor.Dispose();
            }
        }
        finally
        {
            foreach (var parameter in parameters) parameter.Dispose();
        }
    }

    private static Tensor Load(SafeTensorsFile golden, CpuBackend backend, string key, DType dtype, string? name)
    {
        var info = golden.Get(key);
        var tensor = backend.FromBytes(golden.GetBytes(key), DType.F32, info.Shape.Select(s => (int)s).ToArray(), dtype);
        tensor.Name = name;
        return tensor;
    }
}
