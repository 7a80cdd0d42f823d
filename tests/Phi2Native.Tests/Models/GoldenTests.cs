using NUnit.Framework;
using Phi2Native.Autograd;
using Phi2Native.Backends.Cpu;
using Phi2Native.IO;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Models;

/// <summary>
/// The engine against PyTorch (tests/fixtures/make_golden.py, float64 on the stored weights): logits, loss and the
/// gradient of every parameter, for every checkpoint layout the loader reads.
/// </summary>
[TestFixture]
public class GoldenTests
{
    public static readonly string[] Variants = ["f32", "sharded", "f16", "bf16", "msft"];

    [TestCaseSource(nameof(Variants))]
    public void TraceCaseMatchesPyTorch(string variant) => CheckCase(variant, "trace", DType.F32);

    [Test]
    public void BatchWithIgnoredLabelsMatchesPyTorch() => CheckCase("f32", "batch", DType.F32);

    [Test]
    public void DoublePrecisionMatchesPyTorchToStorageRounding()
    {
        // The golden values are float64 results stored as F32: an F64 engine must agree to that rounding.
        CheckCase("f32", "batch", DType.F64, new Tolerance(1e-7, 1e-6), new Tolerance(1e-7, 1e-6));
    }

    private static void CheckCase(string variant, string prefix, DType dtype, Tolerance? forward = null, Tolerance? gradient = null)
    {
        using var golden = Fixtures.OpenGolden(variant);
        var backend = new CpuBackend(poisonNewMemory: true);
        using var model = Phi2Checkpoint.Load(Fixtures.ModelDirectory(variant), backend, dtype);
        model.SetRequiresGrad(true);
        int[] ids = golden.ReadInt32($"{prefix}.input_ids");
        var idShape = golden.Get($"{prefix}.input_ids").Shape;
        int batch = idShape.Length == 2 ? (int)idShape[0] : 1;
        int[] labels = golden.Contains($"{prefix}.labels") ? golden.ReadInt32($"{prefix}.labels") : ids;
        string hint = $"variant {variant}, {Fixtures.RegenerateHint}";

        using var scope = TensorScope.Begin();
        using var tape = GradientTape.Begin();
        var logits = model.Forward(model.CreateInputIds(ids, batch));
        var loss = model.CausalLanguageModelLoss(logits, labels);
        tape.Backward(loss);

        TensorAssert.Close($"{prefix}.logits", golden.ReadAsSingle($"{prefix}.logits"), logits.ToSingleArray(), forward ?? Tolerance.Forward(DType.F32), hint);
        TensorAssert.Close($"{prefix}.loss", golden.ReadAsSingle($"{prefix}.loss"), loss.ToSingleArray(), forward ?? Tolerance.Forward(DType.F32), hint);
        var gradientNames = golden.Tensors.Select(t => t.Name).Where(n => n.StartsWith($"{prefix}.grad.", StringComparison.Ordinal))
            .Select(n => n[$"{prefix}.grad.".Length..]).ToHashSet();
        Assert.That(model.Parameters().Select(p => p.Name).ToHashSet(), Is.EquivalentTo(gradientNames), "parameters vs golden gradients");
        foreach (var parameter in model.Parameters())
        {
            Assert.That(parameter.Grad, Is.Not.Null, $"{parameter.Name} got no gradient");
            TensorAssert.Close($"{prefix}.grad.{parameter.Name}", golden.ReadAsSingle($"{prefix}.grad.{parameter.Name}"),
                parameter.Grad!.ToSingleArray(), gradient ?? Tolerance.Gradient(DType.F32), hint);
        }
    }
}
