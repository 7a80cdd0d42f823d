using System.Runtime.InteropServices;
using NUnit.Framework;
using Phi2Native.Backends.Cpu;
using Phi2Native.FineTuning;
using Phi2Native.FineTuning.Optim;
using Phi2Native.Tensors;

namespace Phi2Native.Tests.FineTuning;

public class GradientClippingTests
{
    private readonly CpuBackend _backend = new(poisonNewMemory: true);

    private Tensor Parameter(string name, float[]? gradient, params int[] shape)
    {
        var parameter = _backend.Zeros(shape, DType.F32);
        parameter.Name = name;
        parameter.RequiresGrad = true;
        if (gradient != null) parameter.Grad = _backend.FromBytes(MemoryMarshal.AsBytes(gradient.AsSpan()), DType.F32, shape, DType.F32);
        return parameter;
    }

    [Test]
    public void AboveTheBound_ReturnsTheNormAndScalesEveryGradient()
    {
        // Global norm sqrt(3^2 + 4^2 + 12^2) = 13 over two tensors; a third has no gradient.
        using var a = Parameter("a.weight", [3, 4], 2);
        using var b = Parameter("b.bias", [0, 0, 12], 3);
        using var frozen = Parameter("c.weight", null, 2);
        double norm = GradientClipping.ClipGradientsByGlobalNorm([a, b, frozen], maxNorm: 6.5);
        Assert.That(norm, Is.EqualTo(13.0).Within(1e-12));
        double coefficient = 6.5 / (13.0 + 1e-6); // torch's epsilon keeps the clipped norm just under the bound
        Assert.That(a.Grad!.ToArray<float>(), Is.EqualTo(new[] { 3 * coefficient, 4 * coefficient }).Within(1e-6).AsCollection);
        Assert.That(b.Grad!.ToArray<float>(), Is.EqualTo(new[] { 0, 0, 12 * coefficient }).Within(1e-6).AsCollection);
        Assert.That(frozen.Grad, Is.Null);
        Assert.That(GradientClipping.ClipGradientsByGlobalNorm([a, b], 100), Is.EqualTo(6.5).Within(1e-5), "the new norm");
    }

    [Test]
    public void AtOrBelowTheBound_LeavesGradientsBitForBit()
    {
        float[] values = [0.1f, -0.7f, 1e-30f, 0.3333333f];
        using var a = Parameter("a.weight", values, 4);
        double expected = Math.Sqrt(values.Sum(v => (double)v * v));
        Assert.That(GradientClipping.ClipGradientsByGlobalNorm([a], maxNorm: 10), Is.EqualTo(expected).Within(1e-7));
        Assert.That(a.Grad!.ToArray<float>(), Is.EqualTo(values).AsCollection);
        // maxNorm = norm + 1e-6 makes the coefficient exactly 1: not below 1, so nothing is scaled.
        Assert.That(GradientClipping.ClipGradientsByGlobalNorm([a], maxNorm: expected + 1e-6), Is.EqualTo(expected).Within(1e-7));
        Assert.That(a.Grad!.ToArray<float>(), Is.EqualTo(values).AsCollection);
    }

    [Test]
    public void NoGradients_ReturnsZero()
    {
        using var a = Parameter("a.weight", null, 3);
        Assert.That(GradientClipping.ClipGradientsByGlobalNorm([a], 1.0), Is.EqualTo(0.0));
        Assert.That(GradientClipping.ClipGradientsByGlobalNorm([], 1.0), Is.EqualTo(0.0));
    }

    [Test]
    public void InfiniteGradient_IsReported()
    {
        using var a = Parameter("a.weight", [float.PositiveInfinity, 1], 2);
        Assert.That(GradientClipping.ClipGradientsByGlobalNorm([a], 1.0), Is.EqualTo(double.PositiveInfinity));
    }

    [TestCase(0.0)]
    [TestCase(-1.0)]
    [TestCase(double.NaN)]
    public void NonPositiveMaxNorm_Throws(double maxNorm)
    {
        using var a = Parameter("a.weight", [1, 2], 2);
        Assert.Throws<ArgumentOutOfRangeException>(() => GradientClipping.ClipGradientsByGlobalNorm([a], maxNorm));
    }
}
