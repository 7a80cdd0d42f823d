using NUnit.Framework;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Ops.Activation;

using static Phi2Native.Tests.Backends.Cpu.KernelCheck;
namespace Phi2Native.Tests.Backends.Cpu;

public class CpuGeluTests
{
    private static double Reference(double x) =>
        0.5 * x * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));

    [TestCase(37)]
    [TestCase(1031)] // several scratch chunks plus a ragged tail
    [TestCase(40_000)] // several parallel work items (16K elements each), the last one short
    public void Forward_MatchesReference_FloatAndDouble(int n)
    {
        double[] x = Random(n, seed: 70, scale: 6);
        x[0] = 0; x[1] = -20; x[2] = 20; // saturated tails: y -> 0 and y -> x
        double[] expected = Array.ConvertAll(x, Reference);
        var y = new double[n];
        CpuGelu.Forward<double>(x, y);
        AssertClose("y", y, expected, DoubleAtol, DoubleRtol);
        var yf = new float[n];
        CpuGelu.Forward<float>(ToFloat(x), yf);
        AssertClose("y(float)", yf, expected);
    }

    [Test]
    public void Backward_MatchesFiniteDifferences()
    {
        double[] x = Random(537, seed: 71, scale: 5);
        double[] r = Random(x.Length, seed: 72);
        var y = new double[x.Length];
        double Objective()
        {
            CpuGelu.Forward<double>(x, y);
            return Dot(y, r);
        }
        double[] dx = Random(x.Length, seed: 73); // overwritten
        CpuGelu.Backward<double>(r, x, dx);
        CheckGradient("x", x, dx, Objective);
    }

    [Test]
    public void Backward_FloatMatchesDouble_LargeAndInPlace()
    {
        // Large enough to run multi-threaded.
        double[] x = Random(100_003, seed: 74, scale: 8), dy = Random(x.Length, seed: 75);
        var dx = new double[x.Length];
        CpuGelu.Backward<double>(dy, x, dx);
        float[] xf = ToFloat(x), dyf = ToFloat(dy);
        var dxf = new float[x.Length];
        CpuGelu.Backward<float>(dyf, xf, dxf);
        AssertClose("dx(float)", dxf, dx);

        CpuGelu.Backward<float>(dyf, xf, dyf); // dx aliasing dy
        Assert.That(dyf, Is.EqualTo(dxf).AsCollection, "dx == dy in place");
        var yf = new float[x.Length];
        CpuGelu.Forward<float>(xf, yf);
        CpuGelu.Forward<float>(xf, xf); // y aliasing x
        Assert.That(xf, Is.EqualTo(yf).AsCollection, "y == x in place");
    }

    [Test]
    public void WrongLength_ThrowsNamingTheSpan()
    {
        var ex = Assert.Throws<ArgumentException>(() => CpuGelu.Backward<float>(new float[4], new float[4], new float[3]));
        Assert.That(ex!.ParamName, Is.EqualTo("dx"));
    }
}
