// Shared helpers for the CPU kernel tests: seeded random data, tolerances (from Support/Tolerance.cs),
// element-wise comparison that names the tensor and the first bad index, and central-difference
// gradient checks in double precision.
using NUnit.Framework;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Backends.Cpu;

internal static class KernelCheck
{
    public const double DoubleAtol = Tolerance.Kernel.DoubleAtol, DoubleRtol = Tolerance.Kernel.DoubleRtol;
    public const double FloatAtol = Tolerance.Kernel.FloatAtol, FloatRtol = Tolerance.Kernel.FloatRtol;
    public const double FdStep = Tolerance.Kernel.FdStep, GradTol = Tolerance.Kernel.GradTol;

    /// <summary>Uniform values in [-scale, scale) from a fixed seed.</summary>
    public static double[] Random(int count, int seed, double scale = 1.0)
    {
        var rng = new Random(seed);
        var a = new double[count];
        for (int i = 0; i < count; i++) a[i] = (rng.NextDouble() * 2 - 1) * scale;
        return a;
    }

    public static float[] ToFloat(double[] a) => Array.ConvertAll(a, v => (float)v);

    public static double[] ToDouble(float[] a) => Array.ConvertAll(a, v => (double)v);

    /// <summary>sum(a * b) in double: the scalar objective whose gradient w.r.t. a is b.</summary>
    public static double Dot(ReadOnlySpan<double> a, ReadOnlySpan<double> b)
    {
        Assert.That(a.Length, Is.EqualTo(b.Length), "Dot length mismatch");
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += a[i] * b[i];
        return s;
    }

    /// <summary>Asserts |actual - expected| &lt;= atol + rtol*|expected| element-wise; the message
    /// names the tensor, the max error and the first failing index.</summary>
    public static void AssertClose(string name, ReadOnlySpan<double> actual, ReadOnlySpan<double> expected,
        double atol, double rtol)
    {
        Assert.That(actual.Length, Is.EqualTo(expected.Length), $"{name}: length");
        double maxErr = 0;
        int first = -1;
        for (int i = 0; i < actual.Length; i++)
        {
            double err = Math.Abs(actual[i] - expected[i]);
            if (double.IsNaN(actual[i]) != double.IsNaN(expected[i])) err = double.PositiveInfinity;
            else if (double.IsNaN(err)) err = 0;
            maxErr = Math.Max(maxErr, err);
            if (first < 0 && err > atol + rtol * Math.Abs(expected[i])) first = i;
        }
        if (first >= 0)
            Assert.Fail($"{name}: max error {maxErr:E3}; first mismatch at [{first}]: " +
                        $"actual {actual[first]:R}, expected {expected[first]:R} (atol {atol:E1}, rtol {rtol:E1})");
    }

    public static void AssertClose(string name, ReadOnlySpan<float> actual, ReadOnlySpan<double> expected,
        double atol = FloatAtol, double rtol = FloatRtol) =>
        AssertClose(name, ToDouble(actual.ToArray()), expected, atol, rtol);

    /// <summary>Checks every element of <paramref name="analytic"/> against central differences of
    /// <paramref name="objective"/>, which must read <paramref name="input"/> (perturbed in place and
    /// restored).</summary>
    public static void CheckGradient(string name, double[] input, ReadOnlySpan<double> analytic, Func<double> objective)
    {
        Assert.That(analytic.Length, Is.EqualTo(input.Length), $"{name}: gradient length");
        var numeric = new double[input.Length];
        for (int i = 0; i < input.Length; i++)
        {
            double saved = input[i];
            input[i] = saved + FdStep;
            double plus = objective();
            input[i] = saved - FdStep;
            double minus = objective();
            input[i] = saved;
            numeric[i] = (plus - minus) / (2 * FdStep);
        }
        // Relative to the gradient's overall size, so near-zero entries are not held to 1e-7 of
        // themselves (their central difference carries the same absolute rounding as the rest).
        double scale = 0;
        foreach (double g in numeric) scale = Math.Max(scale, Math.Abs(g));
        AssertClose($"d{name} (analytic vs finite difference)", analytic, numeric, GradTol * Math.Max(scale, 1e-3), GradTol);
    }
}
