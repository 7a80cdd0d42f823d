using System.Runtime.InteropServices;
using NUnit.Framework;
using Phi2Native.Backends.Cpu;
using Phi2Native.FineTuning;
using Phi2Native.FineTuning.Optim;
using Phi2Native.Tensors;

namespace Phi2Native.Tests.FineTuning;

public class AdamWTests
{
    private readonly CpuBackend _backend = new(poisonNewMemory: true);

    private Tensor Tensor(string? name, float[] values, params int[] shape)
    {
        var tensor = _backend.FromBytes(MemoryMarshal.AsBytes(values.AsSpan()), DType.F32, shape, DType.F32);
        tensor.Name = name;
        return tensor;
    }

    private static float[] Ramp(int count, float start, float step) => Enumerable.Range(0, count).Select(i => start + step * i).ToArray();

    /// <summary>A weight [3, 4], a bias [3] and a LayerNorm weight [4], named as in Phi-2.</summary>
    private Tensor[] Parameters() =>
    [
        Tensor("model.layers.1.self_attn.dense.weight", Ramp(12, -0.5f, 0.09f), 3, 4),
        Tensor("model.layers.1.self_attn.dense.bias", Ramp(3, 0.1f, -0.07f), 3),
        Tensor("model.layers.1.input_layernorm.weight", Ramp(4, 0.9f, 0.05f), 4),
    ];

    private void SetGradients(Tensor[] parameters, int seed)
    {
        var random = new Random(seed);
        foreach (var parameter in parameters)
        {
            parameter.ZeroGrad();
            var values = Enumerable.Range(0, (int)parameter.ElementCount).Select(_ => (float)(random.NextDouble() - 0.5)).ToArray();
            parameter.Grad = Tensor(null, values, parameter.Shape.ToArray());
        }
    }

    private static void DisposeAll(IEnumerable<Tensor> tensors)
    {
        foreach (var tensor in tensors) tensor.Dispose();
    }

    [TestCase("model.layers.3.self_attn.q_proj.weight", true)]
    [TestCase("model.layers.3.mlp.fc2.weight", true)]
    [TestCase("model.embed_tokens.weight", true)]
    [TestCase("lm_head.weight", true)]
    [TestCase("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", true)]
    [TestCase("model.layers.3.self_attn.q_proj.bias", false)]
    [TestCase("lm_head.bias", false)]
    [TestCase("model.layers.3.input_layernorm.weight", false)]
    [TestCase("model.final_layernorm.weight", false)]
    [TestCase("model.final_layernorm.bias", false)]
    [TestCase("lm_head.ln.weight", false)]           // phi-msft's final LayerNorm
    [TestCase("transformer.h.0.ln.weight", false)]   // phi-msft's layer LayerNorm
    [TestCase("model.norm.weight", false)]
    public void DefaultWeightDecayRule_SkipsBiasesAndNorms(string name, bool decays) =>
        Assert.That(AdamWOptions.DefaultAppliesWeightDecay(name), Is.EqualTo(decays));

    [Test]
    public void ParametersWithoutGradient_AreUntouchedAndGetNoState()
    {
        var parameters = Parameters();
        try
        {
            using var optimizer = new AdamW(parameters, new AdamWOptions { LearningRate = 0.1, WeightDecay = 0.5 });
            SetGradients(parameters, seed: 1);
            parameters[1].ZeroGrad(); // the bias gets no gradient
            var before = parameters.Select(p => p.ToArray<float>()).ToArray();
            optimizer.Step();
            Assert.That(parameters[1].ToArray<float>(), Is.EqualTo(before[1]).AsCollection, "a parameter without gradient is not even decayed");
            Assert.That(parameters[0].ToArray<float>(), Is.Not.EqualTo(before[0]).AsCollection);
            Assert.That(parameters[2].ToArray<float>(), Is.Not.EqualTo(before[2]).AsCollection);
            var state = optimizer.SaveState();
            try
            {
                Assert.That(state["step." + parameters[1].Name].ToArray<int>(), Is.EqualTo(new[] { 0 }));
                Assert.That(state["exp_avg." + parameters[1].Name].ToArray<float>(), Is.All.EqualTo(0f));
                Assert.That(state["step." + parameters[0].Name].ToArray<int>(), Is.EqualTo(new[] { 1 }));
                Assert.That(state["step"].ToArray<int>(), Is.EqualTo(new[] { 1 }));
            }
            finally
            {
                DisposeAll(state.Values);
            }
        }
        finally
        {
            DisposeAll(parameters);
        }
    }

    [Test]
    public void AParameterThatSkippedSteps_GetsFirstStepBiasCorrection()
    {
        // torch counts steps per parameter: the bias's first update (on the optimizer's 3rd step) is a first step,
        // which moves it by lr * g / (|g| + eps) ~ lr * sign(g) (weight decay is off for a bias).
        var parameters = Parameters();
        try
        {
            using var optimizer = new AdamW(parameters, new AdamWOptions { LearningRate = 0.01, Epsilon = 1e-12 });
            for (int step = 0; step < 3; step++)
            {
                SetGradients(parameters, seed: 10 + step);
                if (step < 2) parameters[1].ZeroGrad();
                var bias = parameters[1].ToArray<float>();
                var gradient = parameters[1].Grad?.ToArray<float>();
                optimizer.Step();
                if (gradient == null) continue;
                var expected = bias.Select((b, i) => b - 0.01f * Math.Sign(gradient[i])).ToArray();
                Assert.That(parameters[1].ToArray<float>(), Is.EqualTo(expected).Within(1e-6).AsCollection);
            }
            Assert.That(optimizer.StepCount, Is.EqualTo(3));
        }
        finally
        {
            DisposeAll(parameters);
        }
    }

    [Test]
    public void SaveThenLoad_ContinuesBitForBit()
    {
        var straight = Parameters();
        var resumed = Parameters();
        var options = new AdamWOptions { LearningRate = 0.03, Beta2 = 0.95, WeightDecay = 0.1 };
        try
        {
            using var a = new AdamW(straight, options);
            for (int step = 0; step < 2; step++)
            {
                SetGradients(straight, seed: 20 + step);
                a.Step();
            }
            Dictionary<string, Tensor> saved;
            using (var scope = TensorScope.Begin())
            {
                // Saved state may be made inside a scope: it belongs to that scope.
                saved = a.SaveState();
                Assert.That(saved.Keys, Is.EquivalentTo(new[] { "step" }.Concat(straight.SelectMany(p => new[] { $"exp_avg.{p.Name}", $"exp_avg_sq.{p.Name}", $"step.{p.Name}" }))));
                Assert.That(saved[$"exp_avg.{straight[0].Name}"].DType, Is.EqualTo(DType.F32));
                Assert.That(saved[$"exp_avg.{straight[0].Name}"].Shape.ToArray(), Is.EqualTo(new[] { 3, 4 }));

                // The resumed run starts from the same parameter values and loads the state, then both take step 3.
                for (int i = 0; i < straight.Length; i++)
                    _backend.CopyToHost(straight[i], MemoryMarshal.AsBytes(CpuBackend.Span<float>(resumed[i])));
                using var b = new AdamW(resumed, options);
                b.LoadState(saved);
                Assert.That(b.StepCount, Is.EqualTo(2));
                foreach (var tensor in saved.Values) tensor.Dispose(); // loading copied them
                SetGradients(straight, seed: 30);
                SetGradients(resumed, seed: 30);
                a.LearningRate = b.LearningRate = 0.02;
                a.Step();
                b.Step();
                for (int i = 0; i < straight.Length; i++)
                    Assert.That(resumed[i].ToArray<float>(), Is.EqualTo(straight[i].ToArray<float>()).AsCollection, straight[i].Name);
            }
        }
        finally
        {
            DisposeAll(straight);
            DisposeAll(resumed);
        }
    }

    [Test]
    public void LoadState_NamesMissingMisShapedAndUnexpectedEntries_AndChangesNothing()
    {
        var parameters = Parameters();
        try
        {
            using var optimizer = new AdamW(parameters);
            SetGradients(parameters, seed: 40);
            optimizer.Step();
            var state = optimizer.SaveState();
            var good = state.ToDictionary();
            try
            {
                string weight = parameters[0].Name!, bias = parameters[1].Name!;
                state.Remove($"exp_avg_sq.{bias}");
                state[$"exp_avg.{weight}"] = Tensor(null, new float[12], 4, 3);
                state[$"step.{bias}"] = Tensor(null, [1.5f], 1);
                state["exp_avg.model.layers.9.mlp.fc1.weight"] = Tensor(null, new float[2], 2);
                var ex = Assert.Throws<OptimizerStateException>(() => optimizer.LoadState(state));
                Assert.That(ex!.Message, Does.Contain($"missing exp_avg_sq.{bias}"));
                Assert.That(ex.Message, Does.Contain($"exp_avg.{weight}: expected shape [3, 4], got [4, 3]"));
                Assert.That(ex.Message, Does.Contain($"step.{bias}: expected a count >= 0, got 1.5"));
                Assert.That(ex.Message, Does.Contain("unexpected exp_avg.model.layers.9.mlp.fc1.weight"));
                Assert.That(optimizer.StepCount, Is.EqualTo(1));

                var noStep = good.Where(kv => kv.Key != "step").ToDictionary();
                Assert.That(Assert.Throws<OptimizerStateException>(() => optimizer.LoadState(noStep))!.Message, Does.Contain("missing step"));
                optimizer.LoadState(good); // the intact state still loads
            }
            finally
            {
                DisposeAll(state.Values.Concat(good.Values).Distinct());
            }
        }
        finally
        {
            DisposeAll(parameters);
        }
    }

    [Test]
    public void DoubleParameters_KeepDoubleState()
    {
        using var single = Tensor("x.weight", [1, 2, 3], 3);
        using var singleGradient = Tensor(null, [0.5f, -0.5f, 0], 3);
        using var parameter = _backend.Cast(single, DType.F64);
        parameter.Name = "x.weight";
        parameter.Grad = _backend.Cast(singleGradient, DType.F64);
        using var optimizer = new AdamW([parameter], new AdamWOptions { LearningRate = 0.1, WeightDecay = 0 });
        optimizer.Step();
        Assert.That(parameter.ToArray<double>(), Is.EqualTo(new[] { 0.9, 2.1, 3.0 }).Within(1e-7).AsCollection);
        var state = optimizer.SaveState();
        Assert.That(state["exp_avg.x.weight"].DType, Is.EqualTo(DType.F64));
        DisposeAll(state.Values);
    }

    [Test]
    public void ZeroGrad_FreesEveryGradient_AndStepInsideAScopeKeepsTheState()
    {
        var parameters = Parameters();
        try
        {
            using var optimizer = new AdamW(parameters);
            using (TensorScope.Begin())
            {
                SetGradients(parameters, seed: 50);
                optimizer.Step(); // moments are created here, inside the scope, yet belong to the optimizer
            }
            optimizer.ZeroGrad();
            Assert.That(parameters.Select(p => p.Grad), Is.All.Null);
            SetGradients(parameters, seed: 51);
            Assert.DoesNotThrow(optimizer.Step);
            Assert.That(optimizer.StepCount, Is.EqualTo(2));
        }
        finally
        {
            DisposeAll(parameters);
        }
    }

    [Test]
    public void MismatchedGradient_ThrowsBeforeUpdatingAnything()
    {
        var parameters = Parameters();
        try
        {
            using var optimizer = new AdamW(parameters);
            SetGradients(parameters, seed: 60);
            parameters[2].ZeroGrad();
            parameters[2].Grad = Tensor(null, new float[4], 2, 2);
            var before = parameters.Select(p => p.ToArray<float>()).ToArray();
            var ex = Assert.Throws<ArgumentException>(optimizer.Step);
            Assert.That(ex!.Message, Does.Contain(parameters[2].Name!).And.Contain("[2, 2]"));
            Assert.That(parameters.Select(p => p.ToArray<float>()), Is.EqualTo(before), "nothing moved");
            Assert.That(optimizer.StepCount, Is.EqualTo(0));
        }
        finally
        {
            DisposeAll(parameters);
        }
    }

    [Test]
    public void BadConstruction_Throws()
    {
        using var unnamed = Tensor(null, [1], 1);
        using var a = Tensor("a.weight", [1], 1);
        using var alsoA = Tensor("a.weight", [2], 1);
        Assert.Throws<ArgumentException>(() => new AdamW([]));
        Assert.That(Assert.Throws<ArgumentException>(() => new AdamW([unnamed]))!.Message, Does.Contain("no name"));
        Assert.That(Assert.Throws<ArgumentException>(() => new AdamW([a, alsoA]))!.Message, Does.Contain("a.weight is listed twice"));
        Assert.Throws<ArgumentOutOfRangeException>(() => new AdamW([a], new AdamWOptions { Beta2 = 1 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new AdamW([a], new AdamWOptions { WeightDecay = -0.1 }));
        using var optimizer = new AdamW([a]);
        Assert.Throws<ArgumentOutOfRangeException>(() => optimizer.LearningRate = double.NaN);
    }
}
