using System.Numerics;
using NUnit.Framework;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Ops.Rotary;

using static Phi2Native.Tests.Backends.Cpu.KernelCheck;
namespace Phi2Native.Tests.Backends.Cpu;

public class CpuRotaryTests
{
    // Odd sizes: D = 30 with a rotary dim of 12 (6 rotating pairs, 18 pass-through dims), T = 7.
    private const int B = 2, T = 7, H = 3, D = 30, Rd = 12;
    private const double Theta = 10000.0;

    /// <summary>HF transformers, literally: emb = cat(freqs, freqs), cos/sin of emb,
    /// q_rot * cos + rotate_half(q_rot) * sin with rotate_half(x) = cat(-x2, x1); pass-through appended.</summary>
    private static double[] ReferenceHf(double[] x, int batch, int time, int heads, int headDim, int rd, double theta, int offset)
    {
        var y = (double[])x.Clone();
        int half = rd / 2;
        for (int b = 0; b < batch; b++)
        for (int t = 0; t < time; t++)
        for (int h = 0; h < heads; h++)
        {
            int o = ((b * time + t) * heads + h) * headDim;
            for (int i = 0; i < rd; i++)
            {
                int j = i % half;
                double angle = (offset + t) * (1.0 / Math.Pow(theta, 2.0 * j / rd));
                double rotated = i < half ? -x[o + i + half] : x[o + i - half];
                y[o + i] = x[o + i] * Math.Cos(angle) + rotated * Math.Sin(angle);
            }
        }
        return y;
    }

    /// <summary>The same map seen as complex numbers: the pair (x[j], x[j+half]) is z = x[j] + i x[j+half],
    /// multiplied by e^(i angle_j).</summary>
    private static double[] ReferenceComplex(double[] x, int batch, int time, int heads, int headDim, int rd, double theta, int offset)
    {
        var y = (double[])x.Clone();
        int half = rd / 2;
        for (int b = 0; b < batch; b++)
        for (int t = 0; t < time; t++)
        for (int h = 0; h < heads; h++)
        {
            int o = ((b * time + t) * heads + h) * headDim;
            for (int j = 0; j < half; j++)
            {
                double angle = (offset + t) / Math.Pow(theta, 2.0 * j / rd);
                Complex z = new Complex(x[o + j], x[o + j + half]) * Complex.FromPolarCoordinates(1, angle);
                y[o + j] = z.Real;
                y[o + j + half] = z.Imaginary;
            }
        }
        return y;
    }

    [TestCase(0)]
    [TestCase(5)]
    [TestCase(2047)]
    public void Forward_MatchesHfAndComplexReference_FloatAndDouble(int offset)
    {
        double[] x = Random(B * T * H * D, seed: 40 + offset);
        double[] expected = ReferenceHf(x, B, T, H, D, Rd, Theta, offset);
        AssertClose("hf vs complex reference", ReferenceComplex(x, B, T, H, D, Rd, Theta, offset), expected, 1e-12, 1e-12);

        var y = new double[x.Length];
        CpuRotary.Forward<double>(x, y, B, T, H, D, Rd, Theta, offset);
        AssertClose("y", y, expected, DoubleAtol, DoubleRtol);

        var yf = new float[x.Length];
        CpuRotary.Forward<float>(ToFloat(x), yf, B, T, H, D, Rd, Theta, offset);
        AssertClose("y(float)", yf, expected);
    }

    [Test]
    public void Forward_Phi2Shape_RotatesFirst32Of80()
    {
        // Phi-2's own head: D = 80, rd = int(80 * 0.4) = 32.
        double[] x = Random(1 * 5 * 2 * 80, seed: 41);
        double[] expected = ReferenceHf(x, 1, 5, 2, 80, 32, Theta, 3);
        var y = new double[x.Length];
        CpuRotary.Forward<double>(x, y, 1, 5, 2, 80, 32, Theta, 3);
        AssertClose("y", y, expected, DoubleAtol, DoubleRtol);
    }

    [TestCase(0)]
    [TestCase(9)]
    public void Backward_MatchesFiniteDifferences(int offset)
    {
        double[] x = Random(B * T * H * D, seed: 42);
        double[] r = Random(x.Length, seed: 43);
        var y = new double[x.Length];
        double Objective()
        {
            CpuRotary.Forward<double>(x, y, B, T, H, D, Rd, Theta, offset);
            return Dot(y, r);
        }
        double[] dx = Random(x.Length, seed: 44); // overwritten
        CpuRotary.Backward<double>(r, dx, B, T, H, D, Rd, Theta, offset);
        CheckGradient("x", x, dx, Objective);
    }

    [Test]
    public void InPlace_AndBackwardInvertsForward()
    {
        // Big enough to run multi-threaded.
        const int b = 2, t = 64, h = 8, d = 80, rd = 32;
        float[] x = ToFloat(Random(b * t * h * d, seed: 45));
        var y = new float[x.Length];
        CpuRotary.Forward<float>(x, y, b, t, h, d, rd, Theta, 100);
        var inPlace = (float[])x.Clone();
        CpuRotary.Forward<float>(inPlace, inPlace, b, t, h, d, rd, Theta, 100);
        Assert.That(inPlace, Is.EqualTo(y).AsCollection, "in-place equals out-of-place");

        // A rotation's transpose is its inverse.
        CpuRotary.Backward<float>(y, y, b, t, h, d, rd, Theta, 100);
        AssertClose("Backward(Forward(x))", y, ToDouble(x), 1e-5, 1e-5);
    }

    [Test]
    public void RotaryDimZero_Copies()
    {
        double[] x = Random(B * T * H * D, seed: 46);
        var y = new double[x.Length];
        CpuRotary.Forward<double>(x, y, B, T, H, D, 0, Theta, 3);
        Assert.That(y, Is.EqualTo(x).AsCollection);
        CpuRotary.Backward<double>(x, y, B, T, H, D, 0, Theta, 3);
        Assert.That(y, Is.EqualTo(x).AsCollection);
    }

    [TestCase(7)]
    [TestCase(32)]
    [TestCase(-2)]
    public void BadRotaryDim_Throws(int rd)
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() =>
            CpuRotary.Forward<float>(new float[B * T * H * D], new float[B * T * H * D], B, T, H, D, rd, Theta, 0));
        Assert.That(ex!.ParamName, Is.EqualTo("rotaryDim"));
    }

    [Test]
    public void WrongLength_ThrowsNamingTheSpan()
    {
        var ex = Assert.Throws<ArgumentException>(() =>
            CpuRotary.Backward<float>(new float[B * T * H * D], new float[7], B, T, H, D, Rd, Theta, 0));
        Assert.That(ex!.ParamName, Is.EqualTo("dx"));
    }
}
