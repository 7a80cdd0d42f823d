using System.Numerics;

namespace Phi2Native.Bench;

/// <summary>
/// Checks a product against a double-precision triple loop on a sample of rows (all of a large
/// product would take minutes): the first, the last and a few in between.
/// </summary>
internal static class GemmReference
{
    /// <summary>Largest |C - reference| over the sampled rows, and the bound it must stay under.</summary>
    public static (double MaxError, double Tolerance) Check<T>(GemmShape s, T[] a, T[] b, T[] c, int sampleRows = 6)
        where T : unmanaged, INumber<T>
    {
        // fp rounding grows at most linearly with K; |a|, |b| <= 1 here.
        double eps = typeof(T) == typeof(float) ? Math.Pow(2, -23) : Math.Pow(2, -52);
        double tolerance = 4 * s.K * eps;
        int lda = s.TransposeA ? s.M : s.K, ldb = s.TransposeB ? s.K : s.N;
        var rows = Enumerable.Range(0, sampleRows).Select(r => (int)((long)r * (s.M - 1) / Math.Max(1, sampleRows - 1))).Distinct();
        var reference = new double[s.N];
        double maxError = 0;
        foreach (int i in rows)
        {
            Array.Clear(reference);
            for (int p = 0; p < s.K; p++)
            {
                double aip = double.CreateTruncating(s.TransposeA ? a[p * lda + i] : a[i * lda + p]);
                if (s.TransposeB)
                    for (int j = 0; j < s.N; j++) reference[j] += aip * double.CreateTruncating(b[j * ldb + p]);
                else
                    for (int j = 0; j < s.N; j++) reference[j] += aip * double.CreateTruncating(b[p * ldb + j]);
            }
            for (int j = 0; j < s.N; j++)
            {
                double error = Math.Abs(double.CreateTruncating(c[(long)i * s.N + j]) - reference[j]);
                if (!(error <= maxError)) maxError = double.IsNaN(error) ? double.PositiveInfinity : error;
            }
        }
        return (maxError, tolerance);
    }
}
