using System.Numerics;
using System.Runtime.CompilerServices;
using NUnit.Framework;
using Phi2Native.Backends.Cpu;

namespace Phi2Native.Tests.Backends;

/// <summary>
/// <see cref="CpuGemm"/> against a triple loop in double: every transpose, every kernel, sizes that
/// are not multiples of any block (MR 12/6/4, NR 32/16/8, KC 256, MC 144, NC 512/1024), padded leading dimensions
/// whose padding holds NaN (A, B: must not be read) or a sentinel (C: must not be written),
/// alpha/beta cases, batches and argument errors. Fixed seeds throughout.
/// </summary>
[TestFixture]
public class CpuGemmTests
{
    /// <summary>Kernel names (<see cref="GemmKernelKind"/> is internal, so test signatures carry its name).</summary>
    private static readonly string[] Kernels = [nameof(GemmKernelKind.Vector512), nameof(GemmKernelKind.Vector256), nameof(GemmKernelKind.Portable)];

    private static GemmKernelKind Kernel(string name) => Enum.Parse<GemmKernelKind>(name);

    /// <summary>
    /// (m, n, k): odd sizes, single rows/columns, exact tile multiples, and products spanning several
    /// blocks of M (MC 144), N (NC 512/1024) and K (KC 256) at once.
    /// </summary>
    private static readonly (int M, int N, int K)[] Shapes =
    [
        (1, 1, 1), (7, 33, 65), (33, 7, 257), (65, 257, 7), (257, 65, 33), (1, 257, 33), (257, 1, 65),
        (33, 65, 1), (12, 32, 256), (24, 64, 512), (145, 97, 300), (3, 4133, 5), (150, 1100, 260),
    ];

    private static IEnumerable<TestCaseData> ProductCases()
    {
        foreach (var kernel in Kernels)
        foreach (bool ta in new[] { false, true })
        foreach (bool tb in new[] { false, true })
        foreach (var (m, n, k) in Shapes)
            yield return new TestCaseData(kernel, ta, tb, m, n, k).SetName($"{{m}}({kernel},{(ta ? 'T' : 'N')}{(tb ? 'T' : 'N')},{m}x{n}x{k})");
    }

    [TestCaseSource(nameof(ProductCases))]
    public void Float_MatchesReference(string kernel, bool ta, bool tb, int m, int n, int k)
        => CheckProduct<float>(Kernel(kernel), ta, tb, m, n, k, alpha: 1f, beta: 0f, pad: 3, seed: m * 1000 + n * 10 + k);

    [TestCaseSource(nameof(ProductCases))]
    public void Double_MatchesReference(string kernel, bool ta, bool tb, int m, int n, int k)
        => CheckProduct<double>(Kernel(kernel), ta, tb, m, n, k, alpha: 1.0, beta: 0.0, pad: 3, seed: m * 1000 + n * 10 + k);

    [Test]
    public void TightLeadingDimensions([ValueSource(nameof(Kernels))] string kernel, [Values] bool ta, [Values] bool tb)
        => CheckProduct<float>(Kernel(kernel), ta, tb, 37, 71, 259, alpha: 1f, beta: 0f, pad: 0, seed: 7);

    private static IEnumerable<TestCaseData> AlphaBetaCases()
    {
        (double Alpha, double Beta)[] pairs =
        [
            (1.0, 0.0),   // overwrite: C starts NaN and must not leak
            (0.5, 0.0),
            (1.0, 1.0),   // accumulate
            (-2.0, 0.25),
            (0.0, 2.0),   // alpha 0: C = beta C, A and B unread
            (0.0, 0.0),   // alpha 0, beta 0: zeros over NaN
        ];
        foreach (string kernel in Kernels)
        foreach (bool ta in new[] { false, true })
        foreach (var (alpha, beta) in pairs)
            yield return new TestCaseData(kernel, ta, alpha, beta);
    }

    [TestCaseSource(nameof(AlphaBetaCases))]
    public void AlphaBeta(string kernel, bool ta, double alpha, double beta)
    {
        CheckProduct<float>(Kernel(kernel), ta, true, 29, 47, 300, (float)alpha, (float)beta, pad: 2, seed: 11);
        CheckProduct<double>(Kernel(kernel), ta, true, 29, 47, 300, alpha, beta, pad: 2, seed: 12);
    }

    [TestCase(0.0)]
    [TestCase(1.0)]
    [TestCase(-3.0)]
    public void KZero_ScalesC(double beta)
    {
        CheckProduct<float>(GemmKernelKind.Auto, false, false, 9, 13, 0, 1f, (float)beta, pad: 2, seed: 3);
        CheckProduct<double>(GemmKernelKind.Auto, true, true, 9, 13, 0, 1.0, beta, pad: 2, seed: 4);
    }

    [Test]
    public void EmptyProducts_TouchNothing()
    {
        float[] c = [5f, 6f];
        CpuGemm.Gemm(false, false, 0, 2, 3, 1f, [], 3, new float[6], 2, 0f, c, 2);
        CpuGemm.Gemm(false, false, 1, 0, 3, 1f, new float[3], 3, [], 1, 0f, c, 1);
        CpuGemm.GemmBatched(false, false, 1, 2, 3, 1f, [], 3, 3, [], 2, 6, 0f, c, 2, 2, 0);
        Assert.That(c, Is.EqualTo(new[] { 5f, 6f }));
    }

    /// <summary>Large enough to be split over threads (along N, then along M); checked serial and parallel.</summary>
    [TestCase(200, 700, 90)]
    [TestCase(700, 200, 90)]
    [TestCase(301, 301, 301)]
    public void Parallel_MatchesSerialAndReference(int m, int n, int k)
    {
        Assert.That(2L * m * n * k, Is.GreaterThan(CpuGemm.ParallelFlopThreshold));
        CheckProduct<float>(GemmKernelKind.Auto, false, true, m, n, k, 1f, 0f, pad: 1, seed: 5, maxThreads: 1);
        CheckProduct<float>(GemmKernelKind.Auto, false, true, m, n, k, 1f, 0f, pad: 1, seed: 5);
        CheckProduct<float>(GemmKernelKind.Auto, true, false, m, n, k, 0.5f, 2f, pad: 1, seed: 6);
    }

    [Test]
    public void PublicEntryPoints_FloatAndDouble()
    {
        var rng = new Random(21);
        int m = 19, n = 23, k = 41;
        double[] a = Stored(rng, m, k, k, 0.0), b = Stored(rng, k, n, n, 0.0);
        var expected = new Expected(new double[m * n]);
        expected.Add(false, false, m, n, k, 1.0, a, 0, k, b, 0, n, 0.0, 0, n);

        var cd = new double[m * n];
        CpuGemm.Gemm(false, false, m, n, k, 1.0, a, k, b, n, 0.0, cd, n);
        expected.AssertMatches(cd, k, "double");

        var cf = new float[m * n];
        float[] af = a.Select(x => (float)x).ToArray(), bf = b.Select(x => (float)x).ToArray();
        CpuGemm.Gemm(false, false, m, n, k, 1f, af, k, bf, n, 0f, cf, n);
        var expectedF = new Expected(new double[m * n]);
        expectedF.Add(false, false, m, n, k, 1.0, ToDouble(af), 0, k, ToDouble(bf), 0, n, 0.0, 0, n);
        expectedF.AssertMatches(cf, k, "float");
    }

    [Test]
    public void SmallProducts_AllocateNothing()
    {
        // Below the parallel threshold a product runs on the calling thread; after the first call
        // (which sizes this thread's packing buffers) it must not touch the GC heap.
        float[] a = new float[40 * 50], b = new float[30 * 50], c = new float[40 * 30];
        double[] ad = new double[40 * 50], bd = new double[30 * 50], cd = new double[40 * 30];
        void Products()
        {
            CpuGemm.Gemm(false, true, 40, 30, 50, 1f, a, 50, b, 50, 0f, c, 30);
            CpuGemm.Gemm(true, false, 30, 30, 40, 1.0, ad, 30, bd, 30, 0.5, cd, 30);
            CpuGemm.GemmBatched(false, true, 8, 6, 50, 1f, a, 50, 400, b, 50, 300, 0f, c, 30, 6, 5);
        }
        Products();
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 10; i++) Products();
        Assert.That(GC.GetAllocatedBytesForCurrentThread() - before, Is.Zero);
    }

    [Test]
    public void SpecialValues_Propagate()
    {
        // An Inf in A reaches every column of its row (no zero-skipping); a NaN in B reaches every row of its column.
        int m = 13, n = 35, k = 17;
        var rng = new Random(9);
        float[] a = Stored(rng, m, k, k, 0f), b = Stored(rng, k, n, n, 0f);
        a[5 * k + 3] = float.PositiveInfinity;
        b[2 * n + 30] = float.NaN;
        var c = new float[m * n];
        CpuGemm.Gemm(false, false, m, n, k, 1f, a, k, b, n, 0f, c, n);
        for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++)
        {
            float x = c[i * n + j];
            if (j == 30) Assert.That(x, Is.NaN, $"C[{i},{j}]");
            else if (i == 5) Assert.That(float.IsInfinity(x), $"C[{i},{j}] = {x}");
            else Assert.That(float.IsFinite(x), $"C[{i},{j}] = {x}");
        }
    }

    // ---- batches ------------------------------------------------------------------------------

    /// <summary>C layouts of a batch: one after another with a gap, or interleaved within rows (attention heads).</summary>
    public enum CLayout { Consecutive, InterleavedHeads }

    [TestCase(false, true, 8, 17, 33, 20, CLayout.Consecutive, false)]      // many small products: parallel over the batch
    [TestCase(true, false, 8, 17, 33, 20, CLayout.InterleavedHeads, false)]
    [TestCase(false, false, 5, 9, 80, 31, CLayout.InterleavedHeads, true)]  // one A shared by every product (strideA = 0)
    [TestCase(true, true, 2, 130, 150, 140, CLayout.Consecutive, false)]    // few large products: each split over threads
    [TestCase(false, true, 32, 64, 64, 80, CLayout.InterleavedHeads, false)] // q k^T per head, heads written into [T, H*T]
    public void Batched_MatchesReference(bool ta, bool tb, int batch, int m, int n, int k, CLayout layout, bool shareA)
    {
        CheckBatched<float>(ta, tb, batch, m, n, k, layout, shareA, 1f, 0f, seed: batch * 100 + m);
        CheckBatched<double>(ta, tb, batch, m, n, k, layout, shareA, -0.5, 1.5, seed: batch * 100 + n);
    }

    private static void CheckBatched<T>(bool ta, bool tb, int batch, int m, int n, int k, CLayout layout, bool shareA,
        T alpha, T beta, int seed) where T : unmanaged, INumber<T>, IFloatingPointIeee754<T>
    {
        const int Gap = 5, Pad = 2; // NaN between A (B) matrices and in their row padding; sentinels around the Cs
        var rng = new Random(seed);
        int aRows = ta ? k : m, aCols = ta ? m : k, bRows = tb ? n : k, bCols = tb ? k : n;
        int lda = aCols + Pad, ldb = bCols + Pad;
        int strideA = shareA ? 0 : aRows * lda + Gap, strideB = bRows * ldb + Gap;
        int ldc = layout == CLayout.InterleavedHeads ? batch * n + Pad : n + Pad;
        int strideC = layout == CLayout.InterleavedHeads ? n : m * ldc + Gap;
        T[] a = Batch(rng, shareA ? 1 : batch, strideA, aRows, aCols, lda, T.NaN);
        T[] b = Batch(rng, batch, strideB, bRows, bCols, ldb, T.NaN);
        T[] c = Batch(rng, layout == CLayout.InterleavedHeads ? 1 : batch, strideC, m, layout == CLayout.InterleavedHeads ? batch * n : n,
            ldc, Sentinel<T>());
        if (beta == T.Zero)
            for (int i = 0; i < batch; i++) FillUsed(c, i * strideC, m, n, ldc, T.NaN);
        var expected = new Expected(ToDouble(c));

        CpuGemm.Batched(GemmKernelKind.Auto, int.MaxValue, ta, tb, m, n, k, alpha, a, lda, strideA, b, ldb, strideB, beta, c, ldc, strideC, batch);

        double[] ad = ToDouble(a), bd = ToDouble(b);
        for (int i = 0; i < batch; i++)
            expected.Add(ta, tb, m, n, k, double.CreateTruncating(alpha), ad, i * strideA, lda, bd, i * strideB, ldb,
                double.CreateTruncating(beta), i * strideC, ldc);
        expected.AssertMatches(c, k, $"batch {batch} {(ta ? 'T' : 'N')}{(tb ? 'T' : 'N')} {m}x{n}x{k} {layout}");
    }

    /// <summary><paramref name="count"/> stored matrices at <paramref name="stride"/>; everything between them is <paramref name="padding"/>.</summary>
    private static T[] Batch<T>(Random rng, int count, int stride, int rows, int cols, int ld, T padding) where T : unmanaged, INumber<T>
    {
        var x = new T[(count - 1) * stride + rows * ld];
        x.AsSpan().Fill(padding);
        for (int i = 0; i < count; i++)
            Stored(rng, rows, cols, ld, padding).AsSpan(0, rows * ld).CopyTo(x.AsSpan(i * stride));
        return x;
    }

    // ---- argument errors ------------------------------------------------------------------------

    private static IEnumerable<TestCaseData> ArgumentCases()
    {
        float[] a = new float[6 * 8], b = new float[8 * 5], c = new float[6 * 5];
        TestCaseData Case(string param, Action call, string name) => new TestCaseData(call, param).SetName($"Argument_{name}_Throws({param})");
        // Valid baseline: m 6, n 5, k 8, A [6, 8], B [8, 5], C [6, 5].
        yield return Case("m", () => CpuGemm.Gemm(false, false, -1, 5, 8, 1f, a, 8, b, 5, 0f, c, 5), "NegativeM");
        yield return Case("n", () => CpuGemm.Gemm(false, false, 6, -1, 8, 1f, a, 8, b, 5, 0f, c, 5), "NegativeN");
        yield return Case("k", () => CpuGemm.Gemm(false, false, 6, 5, -1, 1f, a, 8, b, 5, 0f, c, 5), "NegativeK");
        yield return Case("lda", () => CpuGemm.Gemm(false, false, 6, 5, 8, 1f, a, 7, b, 5, 0f, c, 5), "LdaBelowK");
        yield return Case("lda", () => CpuGemm.Gemm(true, false, 6, 5, 8, 1f, a, 5, b, 5, 0f, c, 5), "LdaBelowMTransposed");
        yield return Case("ldb", () => CpuGemm.Gemm(false, false, 6, 5, 8, 1f, a, 8, b, 4, 0f, c, 5), "LdbBelowN");
        yield return Case("ldb", () => CpuGemm.Gemm(false, true, 6, 5, 8, 1f, a, 8, b, 7, 0f, c, 5), "LdbBelowKTransposed");
        yield return Case("ldc", () => CpuGemm.Gemm(false, false, 6, 5, 8, 1f, a, 8, b, 5, 0f, c, 4), "LdcBelowN");
        yield return Case("a", () => CpuGemm.Gemm(false, false, 6, 5, 8, 1f, a.AsSpan(1), 8, b, 5, 0f, c, 5), "AShort");
        yield return Case("a", () => CpuGemm.Gemm(false, false, 6, 5, 8, 1f, a, 9, b, 5, 0f, c, 5), "AShortForLda");
        yield return Case("b", () => CpuGemm.Gemm(false, true, 6, 5, 8, 1f, a, 8, b.AsSpan(0, 39), 8, 0f, c, 5), "BShort");
        yield return Case("c", () => CpuGemm.Gemm(false, false, 6, 5, 8, 1f, a, 8, b, 5, 0f, c.AsSpan(0, 29), 5), "CShort");
        yield return Case("c", () => CpuGemm.Gemm(false, false, 6, 5, 8, 1f, a, 8, b, 5, 0f, c, 6), "CShortForLdc");
        yield return Case("c", () => CpuGemm.Gemm(false, false, 2, 2, 2, 1f, a.AsSpan(0, 4), 2, b, 2, 0f, a.AsSpan(3, 4), 2), "COverlapsA");
        yield return Case("c", () => CpuGemm.Gemm(false, false, 2, 2, 2, 1.0, new double[4], 2, new double[4], 2, 0.0, new double[3], 2), "CShortDouble");
        yield return Case("batchCount", () => CpuGemm.GemmBatched(false, false, 6, 5, 8, 1f, a, 8, 0, b, 5, 0, 0f, c, 5, 30, -1), "NegativeBatch");
        yield return Case("strideA", () => CpuGemm.GemmBatched(false, false, 6, 5, 8, 1f, a, 8, -1, b, 5, 0, 0f, c, 5, 30, 1), "NegativeStrideA");
        yield return Case("strideB", () => CpuGemm.GemmBatched(false, false, 6, 5, 8, 1f, a, 8, 0, b, 5, -2, 0f, c, 5, 30, 1), "NegativeStrideB");
        yield return Case("strideC", () => CpuGemm.GemmBatched(false, false, 3, 5, 8, 1f, a, 8, 0, b, 5, 0, 0f, c, 5, -5, 1), "NegativeStrideC");
        yield return Case("a", () => CpuGemm.GemmBatched(false, false, 3, 5, 8, 1f, a, 8, 25, b, 5, 0, 0f, c, 5, 15, 2), "AShortForBatch");
        yield return Case("strideC", () => CpuGemm.GemmBatched(false, false, 3, 5, 8, 1f, a, 8, 0, b, 5, 0, 0f, c, 5, 4, 2), "CMatricesOverlap");
        yield return Case("strideC", () => CpuGemm.GemmBatched(false, false, 2, 2, 2, 1.0, new double[4], 2, 0, new double[4], 2, 0, 0.0, new double[8], 4, 0, 2), "StrideCZero");
    }

    [TestCaseSource(nameof(ArgumentCases))]
    public void ArgumentErrors(Action call, string param)
    {
        var e = Assert.Throws(Is.InstanceOf<ArgumentException>(), () => call());
        Assert.That(((ArgumentException)e!).ParamName, Is.EqualTo(param), e.Message);
    }

    [Test]
    public void ValidBatch_InterleavedHeads_IsAccepted()
    {
        // 4 heads of [3, 2] interleaved in rows of 8: strideC 2, ldc 8; the same call with strideC 1 overlaps.
        var a = new float[3 * 5]; var b = new float[5 * 2]; var c = new float[3 * 8];
        Assert.DoesNotThrow(() => CpuGemm.GemmBatched(false, false, 3, 2, 5, 1f, a, 5, 0, b, 2, 0, 0f, c, 8, 2, 4));
        var e = Assert.Throws<ArgumentException>(() => CpuGemm.GemmBatched(false, false, 3, 2, 5, 1f, a, 5, 0, b, 2, 0, 0f, c, 8, 1, 4));
        Assert.That(e!.ParamName, Is.EqualTo("strideC"));
    }

    // ---- shared machinery -------------------------------------------------------------------

    /// <summary>
    /// Runs one product through <see cref="CpuGemm.Batched{T}"/> with padded storage and checks every
    /// element of C against the double reference, and every padding element of C for its sentinel.
    /// </summary>
    private static void CheckProduct<T>(GemmKernelKind kernel, bool ta, bool tb, int m, int n, int k, T alpha, T beta,
        int pad, int seed, int maxThreads = int.MaxValue)
        where T : unmanaged, INumber<T>, IFloatingPointIeee754<T>
    {
        if (!CpuGemm.IsAccelerated<T>(kernel)) Assert.Ignore($"{kernel} is not accelerated on this machine");
        var rng = new Random(seed);
        int aRows = ta ? k : m, aCols = ta ? m : k, bRows = tb ? n : k, bCols = tb ? k : n;
        int lda = Math.Max(1, aCols + pad), ldb = Math.Max(1, bCols + pad), ldc = n + pad;
        T[] a = Stored(rng, aRows, aCols, lda, T.NaN), b = Stored(rng, bRows, bCols, ldb, T.NaN);
        T[] c = Stored(rng, m, n, ldc, Sentinel<T>());
        // beta == 0 must not read C: poison it.
        if (beta == T.Zero) FillUsed(c, 0, m, n, ldc, T.NaN);
        var expected = new Expected(ToDouble(c));

        CpuGemm.Batched(kernel, maxThreads, ta, tb, m, n, k, alpha, a, lda, 0, b, ldb, 0, beta, c, ldc, 0, 1);

        expected.Add(ta, tb, m, n, k, double.CreateTruncating(alpha), ToDouble(a), 0, lda, ToDouble(b), 0, ldb,
            double.CreateTruncating(beta), 0, ldc);
        expected.AssertMatches(c, k, $"{kernel} {(ta ? 'T' : 'N')}{(tb ? 'T' : 'N')} {m}x{n}x{k}");
    }

    /// <summary>
    /// The double-precision expectation for a C buffer: which elements products write, their values,
    /// and their magnitudes |alpha| sum |a b| + |beta c0| (the scale of the rounding error).
    /// Elements no product writes must keep their original bits.
    /// </summary>
    private sealed class Expected(double[] c0)
    {
        private readonly double[] _value = (double[])c0.Clone(), _magnitude = new double[c0.Length];
        private readonly bool[] _written = new bool[c0.Length];

        /// <summary>Applies C[cOffset + i ldc + j] = alpha op(A) op(B) + beta C0 by a triple loop.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)] // skip tier 0: it runs once per test, for up to 10^8 steps
        public void Add(bool ta, bool tb, int m, int n, int k, double alpha, double[] a, int aOffset, int lda,
            double[] b, int bOffset, int ldb, double beta, int cOffset, int ldc)
        {
            // op(A) [m, k] and op(B) [k, n] gathered contiguously, then an i-p-j loop that streams rows of op(B).
            var opA = new double[m * k];
            var opB = new double[k * n];
            for (int i = 0; i < m; i++)
            for (int p = 0; p < k; p++) opA[i * k + p] = a[aOffset + (ta ? p * lda + i : i * lda + p)];
            for (int p = 0; p < k; p++)
            for (int j = 0; j < n; j++) opB[p * n + j] = b[bOffset + (tb ? j * ldb + p : p * ldb + j)];
            var sums = new double[n];
            var abs = new double[n];
            for (int i = 0; i < m; i++)
            {
                Array.Clear(sums);
                Array.Clear(abs);
                for (int p = 0; p < k; p++)
                {
                    double x = opA[i * k + p];
                    var row = opB.AsSpan(p * n, n);
                    for (int j = 0; j < n; j++)
                    {
                        sums[j] += x * row[j];
                        abs[j] += Math.Abs(x * row[j]);
                    }
                }
                for (int j = 0; j < n; j++)
                {
                    int idx = cOffset + i * ldc + j;
                    if (_written[idx]) Assert.Fail($"test bug: C element {idx} written by two products");
                    // beta == 0 (alpha == 0) means "not used" (BLAS), not IEEE 0 * NaN.
                    double old = beta == 0 ? 0 : beta * c0[idx];
                    _value[idx] = (alpha == 0 ? 0 : alpha * sums[j]) + old;
                    _magnitude[idx] = Math.Abs(alpha) * abs[j] + Math.Abs(old);
                    _written[idx] = true;
                }
            }
        }

        /// <summary>
        /// Written elements within (k + 2) eps of their magnitude (the classic dot-product error bound);
        /// all others bit-identical to before.
        /// </summary>
        public void AssertMatches<T>(T[] actual, int k, string what) where T : unmanaged, INumber<T>, IFloatingPointIeee754<T>
        {
            double eps = double.CreateTruncating(T.BitIncrement(T.One) - T.One);
            for (int idx = 0; idx < actual.Length; idx++)
            {
                double got = double.CreateTruncating(actual[idx]);
                if (!_written[idx])
                {
                    if (!got.Equals(c0[idx])) Assert.Fail($"{what}: element {idx} outside every C was changed: {c0[idx]} -> {got}");
                    continue;
                }
                double tolerance = (k + 2) * eps * _magnitude[idx];
                if (!(Math.Abs(got - _value[idx]) <= tolerance))
                    Assert.Fail($"{what}: C element {idx} = {got:R}, expected {_value[idx]:R} " +
                                $"(|diff| {Math.Abs(got - _value[idx]):E2} > tol {tolerance:E2})");
            }
        }
    }

    /// <summary>Stored [rows, ld] matrix: the first cols of each row uniform in [-1, 1), the rest (and a tail row) <paramref name="padding"/>.</summary>
    internal static T[] Stored<T>(Random rng, int rows, int cols, int ld, T padding) where T : unmanaged, INumber<T>
    {
        var x = new T[Math.Max(1, rows) * ld];
        for (int idx = 0; idx < x.Length; idx++)
            x[idx] = idx / ld < rows && idx % ld < cols ? T.CreateTruncating(rng.NextDouble() * 2 - 1) : padding;
        return x;
    }

    /// <summary>Sets the [rows, cols] matrix at <paramref name="offset"/> (row stride ld) to <paramref name="value"/>.</summary>
    internal static void FillUsed<T>(T[] x, int offset, int rows, int cols, int ld, T value)
    {
        for (int i = 0; i < rows; i++) x.AsSpan(offset + i * ld, cols).Fill(value);
    }

    /// <summary>The value C's padding holds; any change means the product wrote outside [m, n].</summary>
    internal static T Sentinel<T>() where T : unmanaged, INumber<T> => T.CreateTruncating(-777.25);

    internal static double[] ToDouble<T>(T[] x) where T : unmanaged, INumber<T> => x.Select(double.CreateTruncating).ToArray();

}
