namespace Phi2Native.Backends.Cpu;

// Argument checks, done once per call before any pointer is taken: every element the product
// reads or writes must lie inside its span, so the unsafe code below never needs a bounds check.
internal static partial class CpuGemm
{
    private static void Validate<T>(bool ta, bool tb, int m, int n, int k,
        ReadOnlySpan<T> a, int lda, int strideA, ReadOnlySpan<T> b, int ldb, int strideB,
        ReadOnlySpan<T> c, int ldc, int strideC, int batchCount)
    {
        if (m < 0) throw new ArgumentOutOfRangeException(nameof(m), m, "m (rows of C) must be >= 0");
        if (n < 0) throw new ArgumentOutOfRangeException(nameof(n), n, "n (columns of C) must be >= 0");
        if (k < 0) throw new ArgumentOutOfRangeException(nameof(k), k, "k (inner dimension) must be >= 0");
        if (batchCount < 0) throw new ArgumentOutOfRangeException(nameof(batchCount), batchCount, "batchCount must be >= 0");

        // Stored shapes: A [rows, lda], B [rows, ldb], C [m, ldc]; a row holds `cols` used elements.
        long needA = Extent(nameof(lda), lda, ta ? k : m, ta ? m : k, ta ? "A^T: stored [k, lda], lda >= m" : "A: stored [m, lda], lda >= k");
        long needB = Extent(nameof(ldb), ldb, tb ? n : k, tb ? k : n, tb ? "B^T: stored [n, ldb], ldb >= k" : "B: stored [k, ldb], ldb >= n");
        long needC = Extent(nameof(ldc), ldc, m, n, "C: stored [m, ldc], ldc >= n");

        if (strideA < 0) throw new ArgumentOutOfRangeException(nameof(strideA), strideA, "strideA must be >= 0");
        if (strideB < 0) throw new ArgumentOutOfRangeException(nameof(strideB), strideB, "strideB must be >= 0");
        if (strideC < 0) throw new ArgumentOutOfRangeException(nameof(strideC), strideC, "strideC must be >= 0");

        long totalA = Total(needA, strideA, batchCount), totalB = Total(needB, strideB, batchCount), totalC = Total(needC, strideC, batchCount);
        if (a.Length < totalA)
            throw new ArgumentException($"a has {a.Length} elements; {Describe(ta ? k : m, lda, batchCount, strideA)} needs {totalA}", nameof(a));
        if (b.Length < totalB)
            throw new ArgumentException($"b has {b.Length} elements; {Describe(tb ? n : k, ldb, batchCount, strideB)} needs {totalB}", nameof(b));
        if (c.Length < totalC)
            throw new ArgumentException($"c has {c.Length} elements; {Describe(m, ldc, batchCount, strideC)} needs {totalC}", nameof(c));

        if (batchCount > 1 && needC > 0 && strideC < needC && !(strideC >= n && (long)(batchCount - 1) * strideC + n <= ldc))
            throw new ArgumentException(
                $"strideC = {strideC} makes the {batchCount} C matrices [{m}, {n}] (ldc = {ldc}) share elements; " +
                $"use strideC >= {needC}, or interleave within rows (strideC >= n and (batchCount - 1) * strideC + n <= ldc)",
                nameof(strideC));

        // C is written while A and B are read: overlapping storage would feed partial results back in.
        var usedC = c[..(int)totalC];
        if (usedC.Overlaps(a[..(int)totalA])) throw new ArgumentException("c overlaps a: the output must not share memory with an input", nameof(c));
        if (usedC.Overlaps(b[..(int)totalB])) throw new ArgumentException("c overlaps b: the output must not share memory with an input", nameof(c));
    }

    /// <summary>Elements one stored [rows, ld] matrix spans when each row uses its first <paramref name="cols"/>; checks ld.</summary>
    private static long Extent(string ldName, int ld, int rows, int cols, string layout)
    {
        if (ld < Math.Max(1, cols))
            throw new ArgumentOutOfRangeException(ldName, ld, $"{ldName} = {ld} is too small for {layout} (= {cols}; at least 1)");
        return rows == 0 || cols == 0 ? 0 : (long)(rows - 1) * ld + cols;
    }

    /// <summary>Elements a batch of matrices spans: the last one starts at (count - 1) * stride.</summary>
    private static long Total(long one, int stride, int count) => count == 0 || one == 0 ? 0 : (long)(count - 1) * stride + one;

    private static string Describe(int rows, int ld, int count, int stride)
        => count == 1 ? $"[{rows}, ld = {ld}]" : $"{count} matrices [{rows}, ld = {ld}] at stride {stride}";
}
