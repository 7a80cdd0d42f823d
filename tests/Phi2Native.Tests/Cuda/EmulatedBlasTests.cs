using System.Diagnostics;
using NUnit.Framework;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Emulator;
using Phi2Native.DeviceChecks;
using Phi2Native.Tensors;

namespace Phi2Native.Tests.Cuda;

/// <summary>
/// <see cref="EmulatedBlas"/>'s GEMMs against <see cref="NaiveBlas"/>: every transpose combination and supported
/// type combination, padded leading dimensions (padding NaN, so reading it shows, and checked untouched after),
/// odd sizes, alpha/beta cases, strided batches.
/// </summary>
[TestFixture, Category("Emulated")]
internal class EmulatedBlasTests
{
    private const BlasOperation N = BlasOperation.NoTranspose, T = BlasOperation.Transpose;

    private static readonly (DType Input, DType Output)[] TypeCombinations =
        [(DType.F32, DType.F32), (DType.BF16, DType.BF16), (DType.BF16, DType.F32), (DType.F16, DType.F16), (DType.F16, DType.F32)];

    /// <summary>One GEMM: shapes, types, padding of each leading dimension, scalars, batch.</summary>
    public sealed record GemmCase(BlasOperation TransposeA, BlasOperation TransposeB, int M, int N, int K, DType InputType, DType OutputType)
    {
        public int PadA { get; init; }
        public int PadB { get; init; }
        public int PadC { get; init; }
        public float Alpha { get; init; } = 1;
        public float Beta { get; init; }
        public int BatchCount { get; init; } = 1;
        /// <summary>Elements between consecutive matrices beyond the matrix's own extent.</summary>
        public long ExtraStride { get; init; }
        /// <summary>A's stride is 0: one A for the whole batch.</summary>
        public bool BroadcastA { get; init; }
        /// <summary>Call GemmStridedBatchedEx even for a batch of 1.</summary>
        public bool Strided { get; init; }

        public override string ToString() =>
            $"{TransposeA}{TransposeB} {InputType}->{OutputType} {M}x{N}x{K} pad {PadA},{PadB},{PadC} alpha {Alpha} beta {Beta}" +
            (BatchCount > 1 || Strided ? $" batch {BatchCount}+{ExtraStride}{(BroadcastA ? " broadcast A" : "")}" : "");
    }

    private static IEnumerable<TestCaseData> TransposesAndTypes()
    {
        foreach (var ta in new[] { N, T })
            foreach (var tb in new[] { N, T })
                foreach (var (input, output) in TypeCombinations)
                {
                    yield return Case(new GemmCase(ta, tb, 7, 5, 3, input, output));
                    yield return Case(new GemmCase(ta, tb, 13, 11, 9, input, output) { PadA = 3, PadB = 5, PadC = 2, Alpha = 1.5f });
                }
    }

    private static IEnumerable<TestCaseData> AlphaBeta()
    {
        foreach (var type in new[] { DType.F32, DType.BF16 })
        {
            yield return Case(new GemmCase(N, T, 9, 6, 5, type, type) { Beta = 1, PadC = 1 });
            yield return Case(new GemmCase(T, N, 9, 6, 5, type, type) { Alpha = 2, Beta = -0.5f });
            yield return Case(new GemmCase(T, T, 9, 6, 5, type, type) { Alpha = 0, Beta = 2, PadC = 3 });
            yield return Case(new GemmCase(N, N, 9, 6, 5, type, type) { Alpha = 0, Beta = 0 });
        }
    }

    private static IEnumerable<TestCaseData> Batches()
    {
        foreach (var ta in new[] { N, T })
            foreach (var tb in new[] { N, T })
            {
                yield return Case(new GemmCase(ta, tb, 5, 7, 6, DType.F32, DType.F32) { BatchCount = 3, ExtraStride = 17, PadA = 1, PadC = 2, Beta = 0.5f });
                yield return Case(new GemmCase(ta, tb, 6, 3, 4, DType.BF16, DType.F32) { BatchCount = 4, ExtraStride = 5, BroadcastA = true });
            }
        yield return Case(new GemmCase(N, N, 3, 4, 5, DType.F16, DType.F16) { BatchCount = 1, Strided = true });
    }

    private static TestCaseData Case(GemmCase c) => new TestCaseData(c).SetName(c.ToString());

    [TestCaseSource(nameof(TransposesAndTypes))]
    public void GemmMatchesTheNaiveProduct(GemmCase c) => Run(c);

    [TestCaseSource(nameof(AlphaBeta))]
    public void AlphaAndBetaScaleAsDefined(GemmCase c) => Run(c);

    [TestCaseSource(nameof(Batches))]
    public void StridedBatchesMatchTheNaiveProductPerMatrix(GemmCase c) => Run(c);

    [Test]
    public void AProductOfAFewHundredIsFast()
    {
        var c = new GemmCase(T, N, 257, 129, 300, DType.BF16, DType.F32) { PadA = 1 };
        var watch = Stopwatch.StartNew();
        Run(c);
        TestContext.Out.WriteLine($"{c}: {watch.ElapsedMilliseconds} ms including the naive reference");
        Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromSeconds(20)), "far slower than a test can afford");
    }

    [Test]
    public void EmptyProductsFollowBlas()
    {
        using var device = new EmulatedDevice();
        float[] c0 = NaiveBlas.Random(4, 3, 4, DType.F32, seed: 5);
        using var a = DeviceBuffer.Upload(device, DType.F32, new float[16]);
        using var b = DeviceBuffer.Upload(device, DType.F32, new float[16]);
        using var c = DeviceBuffer.Upload(device, DType.F32, c0);

        // m = 0 or n = 0: nothing is read or written.
        device.Blas.GemmEx(N, N, 0, 3, 2, 1, a.Pointer, DType.F32, 1, b.Pointer, DType.F32, 2, 0, c.Pointer, DType.F32, 1, default);
        device.Blas.GemmEx(N, N, 4, 0, 2, 1, a.Pointer, DType.F32, 4, b.Pointer, DType.F32, 2, 0, c.Pointer, DType.F32, 4, default);
        Assert.That(c.Download(), Is.EqualTo(c0));

        // k = 0: the product is empty, so C = beta C (and with beta 0, zeros even where C held NaN).
        device.Blas.GemmEx(N, N, 4, 3, 0, 1, a.Pointer, DType.F32, 4, b.Pointer, DType.F32, 1, 2, c.Pointer, DType.F32, 4, default);
        Assert.That(c.Download(), Is.EqualTo(c0.Select(x => 2 * x).ToArray()));
        device.Fill(c.Pointer, 0xFF, c.Bytes, default);
        device.Blas.GemmEx(N, N, 4, 3, 0, 1, a.Pointer, DType.F32, 4, b.Pointer, DType.F32, 1, 0, c.Pointer, DType.F32, 4, default);
        Assert.That(c.Download(), Is.All.Zero);
    }

    [Test]
    public void BetaZeroDoesNotReadCAndAlphaZeroDoesNotReadAOrB()
    {
        using var device = new EmulatedDevice();
        // Fresh emulated memory is NaN: C untouched by the host, and an A and B that are all NaN.
        using var a = DeviceBuffer.Allocate(device, DType.BF16, 6);
        using var b = DeviceBuffer.Allocate(device, DType.BF16, 6);
        using var c = DeviceBuffer.Allocate(device, DType.F32, 4);
        device.Blas.GemmEx(N, N, 2, 2, 3, 0, a.Pointer, DType.BF16, 2, b.Pointer, DType.BF16, 3, 0, c.Pointer, DType.F32, 2, default);
        Assert.That(c.Download(), Is.All.Zero, "alpha 0 and beta 0 give zeros without reading A, B or C");

        // And the same NaN-filled A with alpha 1 must give NaN: the check above is not vacuous.
        device.Blas.GemmEx(N, N, 2, 2, 3, 1, a.Pointer, DType.BF16, 2, b.Pointer, DType.BF16, 3, 0, c.Pointer, DType.F32, 2, default);
        Assert.That(c.Download(), Is.All.NaN);
    }

    // Uploads A, B, C (NaN padding; C all NaN when beta is 0), runs the GEMM, and checks every matrix of the batch
    // against NaiveBlas and every padding element against NaN.
    private static void Run(GemmCase c)
    {
        using var device = new EmulatedDevice();
        int rowsA = c.TransposeA == N ? c.M : c.K, columnsA = c.TransposeA == N ? c.K : c.M;
        int rowsB = c.TransposeB == N ? c.K : c.N, columnsB = c.TransposeB == N ? c.N : c.K;
        int lda = rowsA + c.PadA, ldb = rowsB + c.PadB, ldc = c.M + c.PadC;
        bool strided = c.Strided || c.BatchCount > 1;
        long strideA = c.BroadcastA ? 0 : strided ? (long)(columnsA - 1) * lda + rowsA + c.ExtraStride : 0;
        long strideB = strided ? (long)(columnsB - 1) * ldb + rowsB + c.ExtraStride : 0;
        long strideC = strided ? (long)(c.N - 1) * ldc + c.M + c.ExtraStride : 0;

        float[] a = NaiveBlas.Random(rowsA, columnsA, lda, c.InputType, seed: 11, c.BroadcastA ? 1 : c.BatchCount, strideA);
        float[] b = NaiveBlas.Random(rowsB, columnsB, ldb, c.InputType, seed: 12, c.BatchCount, strideB);
        float[] c0 = c.Beta != 0
            ? NaiveBlas.Random(c.M, c.N, ldc, c.OutputType, seed: 13, c.BatchCount, strideC)
            : NaiveBlas.Matrix(c.M, c.N, ldc, (_, _, _) => float.NaN, c.BatchCount, strideC);

        using var deviceA = DeviceBuffer.Upload(device, c.InputType, a);
        using var deviceB = DeviceBuffer.Upload(device, c.InputType, b);
        using var deviceC = DeviceBuffer.Upload(device, c.OutputType, c0);
        if (strided)
            device.Blas.GemmStridedBatchedEx(c.TransposeA, c.TransposeB, c.M, c.N, c.K, c.Alpha,
                deviceA.Pointer, c.InputType, lda, strideA, deviceB.Pointer, c.InputType, ldb, strideB,
                c.Beta, deviceC.Pointer, c.OutputType, ldc, strideC, c.BatchCount, default);
        else
            device.Blas.GemmEx(c.TransposeA, c.TransposeB, c.M, c.N, c.K, c.Alpha,
                deviceA.Pointer, c.InputType, lda, deviceB.Pointer, c.InputType, ldb,
                c.Beta, deviceC.Pointer, c.OutputType, ldc, default);
        float[] result = deviceC.Download();

        for (int batch = 0; batch < c.BatchCount; batch++)
        {
            var expected = NaiveBlas.Product(c.TransposeA, c.TransposeB, c.M, c.N, c.K, c.Alpha, a, lda, batch * strideA, b, ldb, batch * strideB);
            var scale = NaiveBlas.AbsoluteProduct(c.TransposeA, c.TransposeB, c.M, c.N, c.K, c.Alpha, a, lda, batch * strideA, b, ldb, batch * strideB);
            if (c.Beta != 0)
            {
                expected = BlasAssert.Add(expected, BlasAssert.Extract(c0, batch * strideC, ldc, c.M, c.N, c.Beta));
                scale = BlasAssert.Add(scale, BlasAssert.Extract(c0, batch * strideC, ldc, c.M, c.N, Math.Abs(c.Beta)));
            }
            BlasAssert.Matrix($"C[batch {batch}]", result, batch * strideC, ldc, c.M, c.N, expected, scale, c.OutputType);
        }
        BlasAssert.PaddingUntouched("C", result, c.M, c.N, ldc, c.BatchCount, strideC);
    }
}
