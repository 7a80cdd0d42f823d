using NUnit.Framework;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Ops.Dropout;
using Phi2Native.Tests.Determinism;

using static Phi2Native.Tests.Backends.Cpu.KernelCheck;
namespace Phi2Native.Tests.Backends.Cpu;

public class CpuDropoutTests
{
    [TestCase(0.1)]
    [TestCase(0.5)]
    [TestCase(0.9)]
    public void KeepRate_IsWithinStatisticalBounds_AndMaskIsDeterministic(double p)
    {
        const int n = 1_000_003;
        float[] x = Enumerable.Repeat(1f, n).ToArray();
        var y = new float[n];
        CpuDropout.Forward<float>(x, y, p, seed: 1234);
        int kept = y.Count(v => v != 0);
        double mean = n * (1 - p), sigma = Math.Sqrt(n * p * (1 - p));
        Assert.That(Math.Abs(kept - mean), Is.LessThan(5 * sigma), $"kept {kept}, expected {mean:F0} +- {sigma:F0}");

        var again = new float[n];
        CpuDropout.Forward<float>(x, again, p, seed: 1234);
        Assert.That(again.AsSpan().SequenceEqual(y), Is.True, "same seed, same mask");
        CpuDropout.Forward<float>(x, again, p, seed: 1235);
        Assert.That(again.AsSpan().SequenceEqual(y), Is.False, "another seed, another mask");
    }

    [Test]
    public void Forward_ScalesKeptValues_AndBackwardUsesTheSameMask()
    {
        const double p = 0.3;
        const ulong seed = 99;
        double[] x = Random(100_001, seed: 80); // large: the multi-threaded path
        var y = new double[x.Length];
        CpuDropout.Forward<double>(x, y, p, seed);
        float[] xf = ToFloat(x);
        var yf = new float[x.Length];
        CpuDropout.Forward<float>(xf, yf, p, seed);
        double[] dy = Random(x.Length, seed: 81);
        var dx = new double[x.Length];
        CpuDropout.Backward<double>(dy, dx, p, seed);
        float scaleF = (float)(1 / (1 - p));
        for (int i = 0; i < x.Length; i++)
        {
            bool keep = DropoutMaskTests.SpecKeep(seed, i, p);
            Assert.That(y[i], Is.EqualTo(keep ? x[i] / (1 - p) : 0).Within(1e-15), $"y[{i}]");
            Assert.That(yf[i], Is.EqualTo(keep ? xf[i] * scaleF : 0f), $"yf[{i}]");
            Assert.That(dx[i], Is.EqualTo(keep ? dy[i] / (1 - p) : 0).Within(1e-15), $"dx[{i}]");
        }
    }

    [Test]
    public void Backward_MatchesFiniteDifferences()
    {
        double[] x = Random(257, seed: 82), r = Random(257, seed: 83);
        var y = new double[x.Length];
        double Objective()
        {
            CpuDropout.Forward<double>(x, y, 0.25, 7);
            return Dot(y, r);
        }
        var dx = new double[x.Length];
        CpuDropout.Backward<double>(r, dx, 0.25, 7);
        CheckGradient("x", x, dx, Objective);
    }

    [Test]
    public void ZeroP_Copies_InPlaceWorks_AndBadPThrows()
    {
        float[] x = ToFloat(Random(1000, seed: 84));
        var y = new float[x.Length];
        CpuDropout.Forward<float>(x, y, 0, 5);
        Assert.That(y, Is.EqualTo(x).AsCollection);

        var expected = new float[x.Length];
        CpuDropout.Forward<float>(x, expected, 0.5, 5);
        CpuDropout.Forward<float>(x, x, 0.5, 5);
        Assert.That(x, Is.EqualTo(expected).AsCollection, "y == x in place");

        foreach (double bad in new[] { 1.0, -0.1, double.NaN })
        {
            var ex = Assert.Throws<ArgumentOutOfRangeException>(() => CpuDropout.Forward<float>(x, y, bad, 5));
            Assert.That(ex!.ParamName, Is.EqualTo("p"));
        }
        Assert.Throws<ArgumentException>(() => CpuDropout.Backward<float>(x, new float[3], 0.1, 5));
    }
}
