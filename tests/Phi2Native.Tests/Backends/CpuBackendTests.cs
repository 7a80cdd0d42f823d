using NUnit.Framework;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Ops.Activation;
using Phi2Native.Tensors;

namespace Phi2Native.Tests.Backends;

/// <summary>The CPU backend's non-differentiable plumbing: conversions, transpose, elementwise helpers.</summary>
[TestFixture]
public class CpuBackendTests
{
    private static readonly CpuBackend Backend = new(poisonNewMemory: true);

    private static Tensor Floats(float[] values, params int[] shape) =>
        Backend.FromBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()), DType.F32, shape, DType.F32);

    [TestCase(1, 1)]
    [TestCase(33, 70)]
    [TestCase(64, 32)]
    public void TransposeMatchesTheDefinition(int rows, int columns)
    {
        var values = Enumerable.Range(0, rows * columns).Select(i => (float)i).ToArray();
        using var matrix = Floats(values, rows, columns);
        using var transposed = Backend.Transpose(matrix);
        Assert.That(transposed.Shape.ToArray(), Is.EqualTo(new[] { columns, rows }));
        var result = transposed.ToArray<float>();
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < columns; c++)
                Assert.That(result[c * rows + r], Is.EqualTo(values[r * columns + c]), $"[{r}, {c}]");
    }

    [Test]
    public void CastsRoundTripExactlyRepresentableValues()
    {
        float[] values = [0f, 1f, -2.5f, 65504f, 0.0009765625f, float.NegativeInfinity];
        using var source = Floats(values, values.Length);
        foreach (var dtype in new[] { DType.F16, DType.BF16, DType.F64 })
        {
            using var narrow = Backend.Cast(source, dtype);
            using var back = Backend.Cast(narrow, DType.F32);
            float[] expected = dtype == DType.BF16 ? values.Select(v => v == 65504f ? 65536f : v).ToArray() : values;
            Assert.That(back.ToArray<float>(), Is.EqualTo(expected), dtype.ToString());
        }
    }

    [Test]
    public void ScaleAndAdd()
    {
        using var x = Floats([3f, -4f, 12f], 3);
        Backend.ScaleInPlace(x, 0.5);
        Assert.That(x.ToArray<float>(), Is.EqualTo(new[] { 1.5f, -2f, 6f }));
        using var y = Backend.Add(x, x);
        Backend.AddInPlace(y, x);
        Assert.That(y.ToArray<float>(), Is.EqualTo(new[] { 4.5f, -6f, 18f }));
    }

    [Test]
    public void OpsRefuseStorageOnlyDtypesWithAClearMessage()
    {
        using var x = Floats([1f, 2f], 2);
        using var half = Backend.Cast(x, DType.F16);
        var e = Assert.Throws<NotSupportedException>(() => GeluNewOp.Forward(half));
        Assert.That(e!.Message, Does.Contain("F32 or F64"));
    }
}
