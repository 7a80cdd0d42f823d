using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.DeviceChecks;

/// <summary>
/// The reference the matrix-product checks and tests compare against, written straight from cuBLAS's column-major
/// definition in double: element (i, j) of a matrix with leading dimension ld is at i + j * ld, op(X)(i, j) is X(i, j)
/// or X(j, i), and C(i, j) = alpha * sum over p of op(A)(i, p) op(B)(p, j) + beta * C(i, j). Deliberately a plain
/// triple loop sharing nothing with the code under test.
/// </summary>
internal static class NaiveBlas
{
    /// <summary>
    /// A host buffer holding a rows x columns column-major matrix (repeated <paramref name="batchCount"/> times,
    /// <paramref name="stride"/> elements apart) with value(batch, i, j) at each element and NaN everywhere else, so
    /// code that reads padding between columns or matrices produces NaN.
    /// </summary>
    public static float[] Matrix(int rows, int columns, int ld, Func<int, int, int, float> value, int batchCount = 1, long stride = 0)
    {
        long length = Math.Max(1, (batchCount - 1) * stride + (long)(columns - 1) * ld + rows);
        var buffer = new float[length];
        Array.Fill(buffer, float.NaN);
        for (int batch = 0; batch < batchCount; batch++)
            for (int j = 0; j < columns; j++)
                for (int i = 0; i < rows; i++)
                    buffer[batch * stride + i + (long)j * ld] = value(batch, i, j);
        return buffer;
    }

    /// <summary><see cref="Matrix"/> with seeded values uniform in [-1, 1), already rounded to <paramref name="type"/>.</summary>
    public static float[] Random(int rows, int columns, int ld, DType type, int seed, int batchCount = 1, long stride = 0)
    {
        var random = new Random(seed);
        return Matrix(rows, columns, ld, (_, _, _) => Round(type, random.NextDouble() * 2 - 1), batchCount, stride);
    }

    /// <summary>
    /// alpha * sum over p &lt; k of op(A)(i, p) op(B)(p, j), for the matrix of the batch starting at the given
    /// offsets: an m x n column-major array (ld m) in double.
    /// </summary>
    public static double[] Product(BlasOperation transposeA, BlasOperation transposeB, int m, int n, int k, double alpha,
        float[] a, long lda, long offsetA, float[] b, long ldb, long offsetB)
    {
        var result = new double[(long)m * n];
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++)
            {
                double sum = 0;
                for (int p = 0; p < k; p++)
                {
                    double opA = transposeA == BlasOperation.NoTranspose ? a[offsetA + i + p * lda] : a[offsetA + p + i * lda];
                    double opB = transposeB == BlasOperation.NoTranspose ? b[offsetB + p + j * ldb] : b[offsetB + j + p * ldb];
                    sum += opA * opB;
                }
                result[i + (long)j * m] = alpha * sum;
            }
        return result;
    }

    /// <summary>
    /// The same sum over absolute values: the scale of the rounding error an fp32 (or any) accumulation can make in
    /// <see cref="Product"/>'s element, for tolerances that follow the size of the terms instead of the result.
    /// </summary>
    public static double[] AbsoluteProduct(BlasOperation transposeA, BlasOperation transposeB, int m, int n, int k, double alpha,
        float[] a, long lda, long offsetA, float[] b, long ldb, long offsetB)
    {
        float[] absoluteA = [.. a.Select(Math.Abs)], absoluteB = [.. b.Select(Math.Abs)];
        return Product(transposeA, transposeB, m, n, k, Math.Abs(alpha), absoluteA, lda, offsetA, absoluteB, ldb, offsetB);
    }

    /// <summary>gelu_new, the tanh form cuBLASLt documents: 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))).</summary>
    public static double Gelu(double x) => 0.5 * x * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (x + 0.044715 * Math.Pow(x, 3))));

    /// <summary>The derivative of <see cref="Gelu"/>, differentiated by hand from the same formula.</summary>
    public static double GeluDerivative(double x)
    {
        double inner = Math.Sqrt(2 / Math.PI) * (x + 0.044715 * Math.Pow(x, 3));
        double tanh = Math.Tanh(inner);
        double innerDerivative = Math.Sqrt(2 / Math.PI) * (1 + 3 * 0.044715 * x * x);
        return 0.5 * (1 + tanh) + 0.5 * x * (1 - tanh * tanh) * innerDerivative;
    }

    /// <summary><paramref name="value"/> as <paramref name="type"/> stores it: rounded to fp32, then to the type, to nearest even.</summary>
    public static float Round(DType type, double value) => type switch
    {
        DType.F32 => (float)value,
        DType.BF16 => DTypes.BFloat16ToSingle(DTypes.SingleToBFloat16((float)value)),
        DType.F16 => (float)(Half)(float)value,
        _ => throw new ArgumentException($"no rounding for {type}", nameof(type)),
    };

    /// <summary>Half a unit in the last place relative to the value, the rounding error of storing as <paramref name="type"/>.</summary>
    public static double UnitRoundoff(DType type) => type switch
    {
        DType.F32 => Math.ScaleB(1, -24),
        DType.BF16 => Math.ScaleB(1, -8),
        DType.F16 => Math.ScaleB(1, -11),
        _ => throw new ArgumentException($"no roundoff for {type}", nameof(type)),
    };
}
