using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.DeviceChecks;

/// <summary>
/// <see cref="IDeviceApi.Blas"/> against <see cref="NaiveBlas"/>: cuBLAS's GEMMs and cuBLASLt's matmul with each
/// epilogue, at shapes like Phi-2's (odd sizes, padded leading dimensions, batches). On the emulator these pin the
/// reference; on a GPU they check CudaBlas's argument marshalling, cuBLAS's semantics (epilogue definitions, the
/// GELU form) and its numerics.
/// </summary>
/// <remarks>
/// Tolerances, per element: the output's rounding (half an ulp of its type, relative to the value) plus
/// (2k + 4) 2^-24 times the sum of the absolute terms, a bound on any fp32 accumulation of k products in any order,
/// even one that truncates instead of rounding. BF16 and F16 products are exact in fp32, so tensor cores fit it; a
/// TF32 product (2^-11 per term) or a BF16 split-K reduction does not, so F32 products prove cuBLAS ran in fp32.
/// GELU outputs get 2e-3 more, relative, in case the GPU's tanh is an approximation; whether the form is tanh or erf
/// is a check of its own. The "probe" checks test readings of cuBLASLt's documentation that it does not state
/// outright (see <see cref="LtEpilogue"/>): a failure there on a GPU means the emulator's definition must change.
/// </remarks>
public static class BlasChecks
{
    private const BlasOperation N = BlasOperation.NoTranspose, T = BlasOperation.Transpose;

    /// <summary>The checks of this family.</summary>
    public static IReadOnlyList<DeviceCheck> All { get; } =
    [
        new("gemm f32 NN 67x45x93", ["cublasGemmEx"], d => Gemm(d, new(N, N, 67, 45, 93, DType.F32, DType.F32))),
        new("gemm bf16->f32 TN 130x77x200", ["cublasGemmEx"], d => Gemm(d, new(T, N, 130, 77, 200, DType.BF16, DType.F32))),
        new("gemm bf16 NT 96x64x80 beta 1 padded", ["cublasGemmEx"],
            d => Gemm(d, new(N, T, 96, 64, 80, DType.BF16, DType.BF16) { Beta = 1, PadA = 8, PadB = 3, PadC = 8 })),
        new("gemm f16 TT 40x33x50 alpha -0.5 beta 2", ["cublasGemmEx"],
            d => Gemm(d, new(T, T, 40, 33, 50, DType.F16, DType.F16) { Alpha = -0.5f, Beta = 2 })),
        new("gemm strided batched bf16->f32 TN 33x33x80 batch 6", ["cublasGemmStridedBatchedEx"],
            d => Gemm(d, new(T, N, 33, 33, 80, DType.BF16, DType.F32) { BatchCount = 6, ExtraStride = 40 })),
        new("gemm strided batched f32 NT 40x24x33 batch 3 beta 0.5", ["cublasGemmStridedBatchedEx"],
            d => Gemm(d, new(N, T, 40, 24, 33, DType.F32, DType.F32) { BatchCount = 3, ExtraStride = 7, PadC = 2, Beta = 0.5f })),
        new("lt default bf16 TN 64x48x72 separate C beta 1", ["cublasLtMatmul"],
            d => Lt(d, new(LtEpilogue.Default, T, N, 64, 48, 72, DType.BF16, DType.BF16) { Beta = 1, SeparateC = true })),
        new("lt bias bf16 TN 160x48x96", ["cublasLtMatmul"], d => Lt(d, new(LtEpilogue.Bias, T, N, 160, 48, 96, DType.BF16, DType.BF16))),
        new("lt bias f32 NN 40x24x36 batch 3", ["cublasLtMatmul"],
            d => Lt(d, new(LtEpilogue.Bias, N, N, 40, 24, 36, DType.F32, DType.F32) { BatchCount = 3 })),
        new("lt gelu_aux_bias bf16 TN 256x40x80", ["cublasLtMatmul"],
            d => Lt(d, new(LtEpilogue.GeluAuxBias, T, N, 256, 40, 80, DType.BF16, DType.BF16))),
        new("lt gelu_aux_bias f32 TN 64x32x48 batch 2", ["cublasLtMatmul"],
            d => Lt(d, new(LtEpilogue.GeluAuxBias, T, N, 64, 32, 48, DType.F32, DType.F32) { BatchCount = 2 })),
        new("lt gelu_aux_bias is the tanh form", ["cublasLtMatmul"], GeluEpilogueProbe.TanhForm),
        new("lt dgelu bf16 NN 256x40x64", ["cublasLtMatmul"], d => Lt(d, new(LtEpilogue.DGelu, N, N, 256, 40, 64, DType.BF16, DType.BF16))),
        new("lt dgelu f32 NT 72x40x30", ["cublasLtMatmul"], d => Lt(d, new(LtEpilogue.DGelu, N, T, 72, 40, 30, DType.F32, DType.F32))),
        new("lt bgradb f32 NT 96x80x40", ["cublasLtMatmul"], d => Lt(d, new(LtEpilogue.BGradB, N, T, 96, 80, 40, DType.F32, DType.F32))),
        new("lt bgradb bf16 NT 80x64x120", ["cublasLtMatmul"], d => Lt(d, new(LtEpilogue.BGradB, N, T, 80, 64, 120, DType.BF16, DType.BF16))),
        new("probe: lt dgelu multiplies beta C too", ["cublasLtMatmul"],
            d => Lt(d, new(LtEpilogue.DGelu, N, N, 48, 24, 32, DType.F32, DType.F32) { Beta = 1, SeparateC = true })),
        new("probe: lt bgradb sum is not scaled by alpha", ["cublasLtMatmul"],
            d => Lt(d, new(LtEpilogue.BGradB, N, T, 48, 40, 24, DType.F32, DType.F32) { Alpha = 0.5f })),
    ];

    /// <summary>A GEMM: shapes, types, padding of each leading dimension, scalars, batch.</summary>
    private sealed record GemmSpec(BlasOperation TransposeA, BlasOperation TransposeB, int M, int N, int K, DType InputType, DType OutputType)
    {
        public float Alpha { get; init; } = 1;
        public float Beta { get; init; }
        public int PadA { get; init; }
        public int PadB { get; init; }
        public int PadC { get; init; }
        public int BatchCount { get; init; } = 1;
        public int ExtraStride { get; init; }
    }

    /// <summary>An LtMatmul; lds are padded by a few elements, the aux ld rounded up to a multiple of 8.</summary>
    private sealed record LtSpec(LtEpilogue Epilogue, BlasOperation TransposeA, BlasOperation TransposeB, int M, int N, int K, DType InputType, DType OutputType)
    {
        public float Alpha { get; init; } = 1;
        public float Beta { get; init; }
        public bool SeparateC { get; init; }
        public int BatchCount { get; init; } = 1;
    }

    private static CheckResult Gemm(IDeviceApi device, GemmSpec s)
    {
        var (rowsA, columnsA) = Stored(s.TransposeA, s.M, s.K);
        var (rowsB, columnsB) = Stored(s.TransposeB, s.K, s.N);
        int lda = rowsA + s.PadA, ldb = rowsB + s.PadB, ldc = s.M + s.PadC;
        long strideA = Extent(rowsA, columnsA, lda) + s.ExtraStride, strideB = Extent(rowsB, columnsB, ldb) + s.ExtraStride;
        long strideC = Extent(s.M, s.N, ldc) + s.ExtraStride;
        float[] a = NaiveBlas.Random(rowsA, columnsA, lda, s.InputType, 31, s.BatchCount, strideA);
        float[] b = NaiveBlas.Random(rowsB, columnsB, ldb, s.InputType, 32, s.BatchCount, strideB);
        float[] c0 = s.Beta != 0 ? NaiveBlas.Random(s.M, s.N, ldc, s.OutputType, 33, s.BatchCount, strideC) : NaN(s.M, s.N, ldc, s.BatchCount, strideC);

        using var deviceA = DeviceBuffer.Upload(device, s.InputType, a);
        using var deviceB = DeviceBuffer.Upload(device, s.InputType, b);
        using var deviceC = DeviceBuffer.Upload(device, s.OutputType, c0);
        if (s.BatchCount == 1)
            device.Blas.GemmEx(s.TransposeA, s.TransposeB, s.M, s.N, s.K, s.Alpha, deviceA.Pointer, s.InputType, lda,
                deviceB.Pointer, s.InputType, ldb, s.Beta, deviceC.Pointer, s.OutputType, ldc, default);
        else
            device.Blas.GemmStridedBatchedEx(s.TransposeA, s.TransposeB, s.M, s.N, s.K, s.Alpha, deviceA.Pointer, s.InputType, lda, strideA,
                deviceB.Pointer, s.InputType, ldb, strideB, s.Beta, deviceC.Pointer, s.OutputType, ldc, strideC, s.BatchCount, default);
        float[] result = deviceC.Download();

        var parts = new List<CheckResult>();
        for (int batch = 0; batch < s.BatchCount; batch++)
        {
            var (p, scale) = Product(s.TransposeA, s.TransposeB, s.M, s.N, s.K, s.Alpha, a, lda, batch * strideA, b, ldb, batch * strideB);
            AddScaled(p, scale, c0, batch * strideC, ldc, s.M, s.N, s.Beta);
            parts.Add(Compare($"C[{batch}]", result, batch * strideC, ldc, s.M, s.N, p, scale, s.OutputType, s.K));
        }
        return CheckResult.Combine([.. parts]);
    }

    private static CheckResult Lt(IDeviceApi device, LtSpec s)
    {
        int m = s.M, n = s.N, k = s.K, batches = s.BatchCount;
        var (rowsA, columnsA) = Stored(s.TransposeA, m, k);
        var (rowsB, columnsB) = Stored(s.TransposeB, k, n);
        int lda = rowsA + 3, ldb = rowsB + 5, ldd = m + 2, ldc = s.SeparateC ? m + 6 : ldd, auxLd = (m + 7) / 8 * 8;
        long strideA = Extent(rowsA, columnsA, lda) + 1, strideB = Extent(rowsB, columnsB, ldb) + 2, strideD = Extent(m, n, ldd) + 3;
        long strideC = Extent(m, n, ldc) + 4, auxStride = (Extent(m, n, auxLd) + 7) / 8 * 8 + 8;
        int biasLength = s.Epilogue == LtEpilogue.BGradB ? n : m;
        long biasStride = biasLength + 1;
        bool biasIn = s.Epilogue is LtEpilogue.Bias or LtEpilogue.GeluAuxBias, usesAux = s.Epilogue is LtEpilogue.GeluAuxBias or LtEpilogue.DGelu;

        float[] a = NaiveBlas.Random(rowsA, columnsA, lda, s.InputType, 41, batches, strideA);
        float[] b = NaiveBlas.Random(rowsB, columnsB, ldb, s.InputType, 42, batches, strideB);
        float[] c0 = s.SeparateC ? NaiveBlas.Random(m, n, ldc, s.OutputType, 43, batches, strideC) : [];
        float[] bias0 = biasIn ? NaiveBlas.Random(biasLength, 1, biasLength, s.OutputType, 44, batches, biasStride) : NaN(biasLength, 1, biasLength, batches, biasStride);
        // DGELU's aux spans [-4, 4]: both tails and the bend of gelu'.
        float[] aux0 = s.Epilogue == LtEpilogue.DGelu
            ? NaiveBlas.Matrix(m, n, auxLd, (batch, i, j) => NaiveBlas.Round(s.OutputType, ((i * 5 + j * 3 + batch) % 17 - 8) / 2.0), batches, auxStride)
            : NaN(m, n, auxLd, batches, auxStride);

        using var deviceA = DeviceBuffer.Upload(device, s.InputType, a);
        using var deviceB = DeviceBuffer.Upload(device, s.InputType, b);
        using var deviceC = s.SeparateC ? DeviceBuffer.Upload(device, s.OutputType, c0) : null;
        using var deviceD = DeviceBuffer.Upload(device, s.OutputType, NaN(m, n, ldd, batches, strideD));
        using var deviceBias = biasIn || s.Epilogue == LtEpilogue.BGradB ? DeviceBuffer.Upload(device, s.OutputType, bias0) : null;
        using var deviceAux = usesAux ? DeviceBuffer.Upload(device, s.OutputType, aux0) : null;
        device.Blas.LtMatmul(new LtMatmulArguments
        {
            TransposeA = s.TransposeA, TransposeB = s.TransposeB, M = m, N = n, K = k, Alpha = s.Alpha, Beta = s.Beta,
            A = deviceA.Pointer, AType = s.InputType, Lda = lda, StrideA = strideA,
            B = deviceB.Pointer, BType = s.InputType, Ldb = ldb, StrideB = strideB,
            C = deviceC?.Pointer ?? DevicePtr.Null, Ldc = ldc, StrideC = strideC,
            D = deviceD.Pointer, DType = s.OutputType, Ldd = ldd, StrideD = strideD, BatchCount = batches, Epilogue = s.Epilogue,
            Bias = deviceBias?.Pointer ?? DevicePtr.Null, BiasType = s.OutputType, BiasBatchStride = biasStride,
            Aux = deviceAux?.Pointer ?? DevicePtr.Null, AuxLd = auxLd, AuxBatchStride = auxStride,
        }, default);
        float[] d = deviceD.Download(), bias = deviceBias?.Download() ?? [], aux = deviceAux?.Download() ?? [];

        var parts = new List<CheckResult>();
        for (int batch = 0; batch < batches; batch++)
        {
            var (p, scale) = Product(s.TransposeA, s.TransposeB, m, n, k, s.Alpha, a, lda, batch * strideA, b, ldb, batch * strideB);
            if (s.SeparateC) AddScaled(p, scale, c0, batch * strideC, ldc, m, n, s.Beta);
            var expected = new double[p.Length];
            double extra = 0;
            for (int j = 0; j < n; j++)
                for (int i = 0; i < m; i++)
                {
                    int x = i + j * m;
                    double biasValue = biasIn ? bias0[batch * biasStride + i] : 0;
                    scale[x] += Math.Abs(biasValue);
                    expected[x] = s.Epilogue switch
                    {
                        LtEpilogue.Bias => p[x] + biasValue,
                        LtEpilogue.GeluAuxBias => NaiveBlas.Gelu(p[x] + biasValue),
                        LtEpilogue.DGelu => p[x] * NaiveBlas.GeluDerivative(aux0[batch * auxStride + i + j * auxLd]),
                        _ => p[x],
                    };
                    if (s.Epilogue is LtEpilogue.GeluAuxBias) scale[x] *= 1.2; // |gelu'| <= 1.13 carries the input's error
                    if (s.Epilogue is LtEpilogue.DGelu) scale[x] *= Math.Abs(NaiveBlas.GeluDerivative(aux0[batch * auxStride + i + j * auxLd]));
                }
            if (s.Epilogue is LtEpilogue.GeluAuxBias or LtEpilogue.DGelu) extra = 2e-3;
            parts.Add(Compare($"D[{batch}]", d, batch * strideD, ldd, m, n, expected, scale, s.OutputType, k, extra));
            if (s.Epilogue == LtEpilogue.GeluAuxBias)
            {
                var preActivation = new double[p.Length];
                var preScale = new double[p.Length];
                for (int x = 0; x < p.Length; x++)
                {
                    preActivation[x] = p[x] + bias0[batch * biasStride + x % m];
                    preScale[x] = scale[x] / 1.2;
                }
                parts.Add(Compare($"aux[{batch}]", aux, batch * auxStride, auxLd, m, n, preActivation, preScale, s.OutputType, k));
            }
            if (s.Epilogue == LtEpilogue.BGradB)
            {
                // The bias gradient: op(B) summed over k, one value per column of D.
                var (gradient, gradientScale) = Product(N, s.TransposeB, 1, n, k, 1, Ones(k), 1, 0, b, ldb, batch * strideB);
                parts.Add(Compare($"bias[{batch}]", bias, batch * biasStride, 1, 1, n, gradient, gradientScale, s.OutputType, k));
            }
        }
        return CheckResult.Combine([.. parts]);
    }

    // op(A) op(B) * alpha and the matching sum of absolute terms, for one matrix of a batch.
    private static (double[] Product, double[] Scale) Product(BlasOperation transposeA, BlasOperation transposeB, int m, int n, int k, double alpha,
        float[] a, long lda, long offsetA, float[] b, long ldb, long offsetB) =>
        (NaiveBlas.Product(transposeA, transposeB, m, n, k, alpha, a, lda, offsetA, b, ldb, offsetB),
         NaiveBlas.AbsoluteProduct(transposeA, transposeB, m, n, k, alpha, a, lda, offsetA, b, ldb, offsetB));

    // p += beta C and scale += |beta C| over the m x n matrix of a host buffer.
    private static void AddScaled(double[] p, double[] scale, float[] c, long offset, long ld, int m, int n, double beta)
    {
        if (beta == 0) return;
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++)
            {
                double term = beta * c[offset + i + j * ld];
                p[i + j * m] += term;
                scale[i + j * m] += Math.Abs(term);
            }
    }

    // Per element: |actual - expected| / (u_out |expected| (1 + extra / u_out) + (2k + 4) 2^-24 scale); at most 1 passes.
    private static CheckResult Compare(string what, float[] actual, long offset, long ld, int m, int n, double[] expected, double[] scale,
        DType outputType, int k, double extraRelative = 0)
    {
        double u = NaiveBlas.UnitRoundoff(outputType) * 1.01 + extraRelative, accumulation = (2.0 * k + 4) * Math.ScaleB(1, -24);
        double maxError = 0, worst = 0;
        string detail = $"{what}: empty";
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++)
            {
                double e = expected[i + j * m], a = actual[offset + i + j * ld];
                double error = double.IsFinite(a) ? Math.Abs(a - e) : double.PositiveInfinity;
                double ratio = error == 0 ? 0 : error / (u * Math.Abs(e) + accumulation * scale[i + j * m] + 1e-30);
                maxError = Math.Max(maxError, error);
                if (ratio > worst || (i == 0 && j == 0))
                {
                    worst = Math.Max(worst, ratio);
                    detail = $"{what}[{i}, {j}] = {a:G9}, expected {e:G9}";
                }
            }
        return new CheckResult(maxError, worst, detail);
    }

    private static (int Rows, int Columns) Stored(BlasOperation operation, int rows, int columns) =>
        operation == N ? (rows, columns) : (columns, rows);

    private static long Extent(int rows, int columns, int ld) => (long)(columns - 1) * ld + rows;

    private static float[] NaN(int rows, int columns, int ld, int batchCount, long stride) =>
        NaiveBlas.Matrix(rows, columns, ld, (_, _, _) => float.NaN, batchCount, stride);

    private static float[] Ones(int count) => [.. Enumerable.Repeat(1f, count)];
}
