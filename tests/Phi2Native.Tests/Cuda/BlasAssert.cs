using NUnit.Framework;
using Phi2Native.DeviceChecks;
using Phi2Native.Tensors;

namespace Phi2Native.Tests.Cuda;

/// <summary>Comparisons of a matrix product's output buffer with <see cref="NaiveBlas"/>'s expectations.</summary>
internal static class BlasAssert
{
    /// <summary>
    /// Every element of the m x n output matrix at <paramref name="offset"/> (leading dimension ld) must equal
    /// <paramref name="expected"/> (m x n, ld m) rounded to <paramref name="type"/>, within two roundings of the
    /// type plus a tiny multiple of <paramref name="scale"/> (the sum of absolute terms, for cancellation).
    /// </summary>
    public static void Matrix(string what, float[] actual, long offset, long ld, int m, int n, double[] expected, double[]? scale, DType type)
    {
        double u = NaiveBlas.UnitRoundoff(type);
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++)
            {
                double e = expected[i + (long)j * m];
                double a = actual[offset + i + j * ld];
                double tolerance = 2 * u * Math.Abs(e) + 1e-9 * (scale?[i + (long)j * m] ?? 0) + 1e-30;
                if (double.IsNaN(a) || Math.Abs(a - e) > tolerance)
                    Assert.Fail($"{what}[{i}, {j}] = {a:G9}, expected {e:G9} (tolerance {tolerance:G3})");
            }
    }

    /// <summary>
    /// Every element outside the batch's m x n matrices must still be NaN, as it was uploaded: an output written
    /// with a wrong ld or stride, or padding read and written back, shows here.
    /// </summary>
    public static void PaddingUntouched(string what, float[] actual, int m, int n, long ld, int batchCount = 1, long stride = 0)
    {
        var inside = new bool[actual.Length];
        for (int batch = 0; batch < batchCount; batch++)
            for (int j = 0; j < n; j++)
                for (int i = 0; i < m; i++)
                    inside[batch * stride + i + j * ld] = true;
        for (int x = 0; x < actual.Length; x++)
            if (!inside[x] && !float.IsNaN(actual[x]))
                Assert.Fail($"{what}: element {x}, outside the {m} x {n} matrices (ld {ld}, stride {stride}), was written: {actual[x]:G9}");
    }

    /// <summary>Element-wise a + b (m x n arrays).</summary>
    public static double[] Add(double[] a, double[] b) => [.. a.Zip(b, (x, y) => x + y)];

    /// <summary>The m x n matrix at <paramref name="offset"/> of a host buffer, as doubles with ld m, times <paramref name="factor"/>.</summary>
    public static double[] Extract(float[] buffer, long offset, long ld, int m, int n, double factor = 1)
    {
        var result = new double[(long)m * n];
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++)
                result[i + (long)j * m] = factor * buffer[offset + i + j * ld];
        return result;
    }
}
