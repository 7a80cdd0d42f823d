using NUnit.Framework;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Ops.Normalization;

using static Phi2Native.Tests.Backends.Cpu.KernelCheck;
namespace Phi2Native.Tests.Backends.Cpu;

public class CpuLayerNormTests
{
    private const int N = 7, C = 37;
    private const double Eps = 1e-5;

    /// <summary>Two-pass mean and biased variance per row, as torch.nn.LayerNorm.</summary>
    private static double[] Reference(double[] x, double[] w, double[] b, int rows, int channels, double eps)
    {
        var y = new double[x.Length];
        for (int r = 0; r < rows; r++)
        {
            double mean = 0, variance = 0;
            for (int c = 0; c < channels; c++) mean += x[r * channels + c];
            mean /= channels;
            for (int c = 0; c < channels; c++) variance += Math.Pow(x[r * channels + c] - mean, 2);
            variance /= channels;
            for (int c = 0; c < channels; c++)
                y[r * channels + c] = (x[r * channels + c] - mean) / Math.Sqrt(variance + eps) * w[c] + b[c];
        }
        return y;
    }

    private static (double[] X, double[] W, double[] B) Inputs(int seed, int rows = N, int channels = C)
    {
        double[] x = Random(rows * channels, seed, 2.0);
        double[] w = Random(channels, seed + 1);
        double[] b = Random(channels, seed + 2);
        for (int c = 0; c < channels; c++) w[c] += 1.0;
        return (x, w, b);
    }

    [Test]
    public void Forward_MatchesReference_FloatAndDouble()
    {
        var (x, w, b) = Inputs(10);
        double[] expected = Reference(x, w, b, N, C, Eps);
        var y = new double[N * C];
        var mean = new double[N];
        var rstd = new double[N];
        CpuLayerNorm.Forward<double>(x, w, b, Eps, y, mean, rstd, N, C);
        AssertClose("y", y, expected, DoubleAtol, DoubleRtol);

        var yf = new float[N * C];
        CpuLayerNorm.Forward<float>(ToFloat(x), ToFloat(w), ToFloat(b), Eps, yf, new float[N], new float[N], N, C);
        AssertClose("y(float)", yf, expected);
    }

    [Test]
    public void Forward_LargeMeanSmallSpread_StaysAccurateInFloat()
    {
        // |mean| / std = 1e4: E[x^2] - E[x]^2 would lose every digit in float; two passes do not.
        const int channels = 301;
        double[] x = Random(channels, 11);
        for (int c = 0; c < channels; c++) x[c] = 1000.0 + 0.1 * x[c];
        double[] xr = ToDouble(ToFloat(x)); // reference on the float-rounded input
        var w = Enumerable.Repeat(1.0, channels).ToArray();
        var b = new double[channels];
        double[] expected = Reference(xr, w, b, 1, channels, Eps);
        var yf = new float[channels];
        CpuLayerNorm.Forward<float>(ToFloat(xr), ToFloat(w), ToFloat(b), Eps, yf, new float[1], new float[1], 1, channels);
        AssertClose("y(float)", yf, expected, 5e-4, 5e-4);
    }

    [Test]
    public void Backward_MatchesFiniteDifferences_ForXWeightAndBias()
    {
        var (x, w, b) = Inputs(20);
        double[] r = Random(N * C, 23);
        var y = new double[N * C];
        var mean = new double[N];
        var rstd = new double[N];
        double Objective()
        {
            CpuLayerNorm.Forward<double>(x, w, b, Eps, y, mean, rstd, N, C);
            return Dot(y, r);
        }
        Objective();

        var dx = Random(N * C, 24); // garbage: dx must be overwritten
        double[] dwInit = Random(C, 25), dbInit = Random(C, 26);
        var dw = (double[])dwInit.Clone();
        var db = (double[])dbInit.Clone();
        CpuLayerNorm.Backward<double>(r, x, w, mean, rstd, dx, dw, db, N, C);
        for (int c = 0; c < C; c++) { dw[c] -= dwInit[c]; db[c] -= dbInit[c]; }

        CheckGradient("x", x, dx, Objective);
        CheckGradient("weight", w, dw, Objective);
        CheckGradient("bias", b, db, Objective);
    }

    [Test]
    public void Backward_FloatMatchesDouble_AndEmptyGradientsAreSkipped()
    {
        // Rows * channels above the parallel threshold, channels not a multiple of the chunk size.
        const int rows = 67, channels = 1031;
        var (x, w, b) = Inputs(30, rows, channels);
        double[] dy = Random(rows * channels, 33);
        var y = new double[rows * channels];
        var mean = new double[rows];
        var rstd = new double[rows];
        CpuLayerNorm.Forward<double>(x, w, b, Eps, y, mean, rstd, rows, channels);
        var dx = new double[rows * channels];
        var dw = new double[channels];
        var db = new double[channels];
        CpuLayerNorm.Backward<double>(dy, x, w, mean, rstd, dx, dw, db, rows, channels);

        float[] xf = ToFloat(x), wf = ToFloat(w), dyf = ToFloat(dy);
        var yf = new float[rows * channels];
        var meanF = new float[rows];
        var rstdF = new float[rows];
        CpuLayerNorm.Forward<float>(xf, wf, ToFloat(b), Eps, yf, meanF, rstdF, rows, channels);
        AssertClose("y(float)", yf, y);
        var dxf = new float[rows * channels];
        var dwf = new float[channels];
        var dbf = new float[channels];
        CpuLayerNorm.Backward<float>(dyf, xf, wf, meanF, rstdF, dxf, dwf, dbf, rows, channels);
        AssertClose("dx(float)", dxf, dx, 1e-4, 1e-4);
        AssertClose("dWeight(float)", dwf, dw, 1e-4, 1e-4);
        AssertClose("dBias(float)", dbf, db, 1e-4, 1e-4);

        // Only dWeight wanted: dx and dBias are empty spans, and dWeight matches the full call.
        var dwOnly = new float[channels];
        CpuLayerNorm.Backward<float>(dyf, xf, wf, meanF, rstdF, [], dwOnly, [], rows, channels);
        Assert.That(dwOnly, Is.EqualTo(dwf).AsCollection);
        var dxOnly = new float[rows * channels];
        CpuLayerNorm.Backward<float>(dyf, xf, wf, meanF, rstdF, dxOnly, [], [], rows, channels);
        Assert.That(dxOnly, Is.EqualTo(dxf).AsCollection);
    }

    [Test]
    public void WrongLength_ThrowsNamingTheSpan()
    {
        var ex = Assert.Throws<ArgumentException>(() => CpuLayerNorm.Forward<float>(new float[N * C], new float[C],
            new float[C - 1], Eps, new float[N * C], new float[N], new float[N], N, C));
        Assert.That(ex!.ParamName, Is.EqualTo("bias"));
        ex = Assert.Throws<ArgumentException>(() => CpuLayerNorm.Backward<float>(new float[N * C], new float[N * C],
            new float[C], new float[N], new float[N], new float[5], [], [], N, C));
        Assert.That(ex!.ParamName, Is.EqualTo("dx"));
    }
}
