using System.Numerics.Tensors;
using Phi2Native.Cuda.Profiling;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Cuda.Emulator;

/// <summary>
/// <see cref="IBlas"/> on the <see cref="EmulatedDevice"/>: a CPU reference with cuBLAS's column-major semantics.
/// Every operand's touched extent is checked against the device's live allocations before anything is read
/// (<see cref="EmulatedDevice.AccessOperands"/>), and only the m x n elements of the outputs are written, so padding
/// between columns keeps whatever it held.
/// </summary>
/// <remarks>
/// Numerics: inputs are widened exactly, products are summed in double in the order p = 0 .. k-1, the result
/// alpha * sum + beta * C (+ bias, epilogue) is rounded to fp32 and then to the output type, each to nearest even.
/// That is what a GPU does with an fp32 accumulator up to the accumulator's own rounding, which the device checks'
/// tolerances cover. When beta is 0, C is not read (the emulator's fresh memory is NaN, so reading it would show);
/// when alpha is 0, A and B are not read, as BLAS defines. Columns of the output are computed in parallel for large
/// products; each column's sum is sequential, so results do not depend on the thread count.
/// </remarks>
internal sealed unsafe class EmulatedBlas(EmulatedDevice device) : IBlas
{
    /// <inheritdoc/>
    /// <remarks>Starts true: the emulator computes GELU_AUX_BIAS as gelu_new by definition (Gelu below).</remarks>
    public bool GeluEpilogueIsGeluNew { get; set; } = true;

    /// <inheritdoc/>
    /// <remarks>Starts true: the emulator computes DGELU as (P + beta C) gelu_new'(aux) by definition (GeluDerivative below).</remarks>
    public bool DGeluEpilogueIsGeluNew { get; set; } = true;

    // Below this many multiply-adds a product runs on the calling thread; above, columns are spread over the pool.
    private const long ParallelThreshold = 1 << 16;

    // The shape and scalars of one call; operands travel separately as host addresses.
    private sealed record Job(BlasOperation TransposeA, BlasOperation TransposeB, int M, int N, int K,
        float Alpha, float Beta, int BatchCount, LtEpilogue Epilogue, BlasOperand[] Operands);

    // Slots of Job.Operands and of the host addresses AccessOperands hands back.
    private const int SlotA = 0, SlotB = 1, SlotC = 2, SlotD = 3, SlotBias = 4, SlotAux = 5;

    /// <inheritdoc />
    public void GemmEx(BlasOperation transposeA, BlasOperation transposeB, int m, int n, int k,
        float alpha, DevicePtr a, DType aType, int lda, DevicePtr b, DType bType, int ldb,
        float beta, DevicePtr c, DType cType, int ldc, DeviceStream stream) =>
        Gemm(nameof(GemmEx), transposeA, transposeB, m, n, k, alpha, a, aType, lda, 0, b, bType, ldb, 0,
            beta, c, cType, ldc, 0, 1, stream);

    /// <inheritdoc />
    public void GemmStridedBatchedEx(BlasOperation transposeA, BlasOperation transposeB, int m, int n, int k,
        float alpha, DevicePtr a, DType aType, int lda, long strideA, DevicePtr b, DType bType, int ldb, long strideB,
        float beta, DevicePtr c, DType cType, int ldc, long strideC, int batchCount, DeviceStream stream) =>
        Gemm(nameof(GemmStridedBatchedEx), transposeA, transposeB, m, n, k, alpha, a, aType, lda, strideA, b, bType, ldb, strideB,
            beta, c, cType, ldc, strideC, batchCount, stream);

    /// <inheritdoc />
    public void LtMatmul(LtMatmulArguments arguments, DeviceStream stream)
    {
        var o = BlasArguments.LtMatmul(arguments);
        BlasOperand[] operands =
        [
            o.A, o.B, o.C ?? None(nameof(arguments.C)), o.D,
            o.Bias ?? None(nameof(arguments.Bias)), o.Aux ?? None(nameof(arguments.Aux)),
        ];
        var job = new Job(arguments.TransposeA, arguments.TransposeB, arguments.M, arguments.N, arguments.K,
            arguments.Alpha, arguments.Beta, arguments.BatchCount, arguments.Epilogue, operands);
        device.RunOrCapture("cublasLtMatmul", stream, s =>
        {
            Run(nameof(LtMatmul), job, s);
            ProfileRecorder.Current?.Launch(ProfileEventKind.Blas, "cublasLtMatmul", SeamRecording.GemmDetail(arguments.M, arguments.N, arguments.K,
                arguments.BatchCount, arguments.AType, arguments.DType, arguments.Beta != 0, arguments.Epilogue.ToString()), BlasCost.LtMatmul(arguments));
        });
    }

    private void Gemm(string call, BlasOperation transposeA, BlasOperation transposeB, int m, int n, int k,
        float alpha, DevicePtr a, DType aType, int lda, long strideA, DevicePtr b, DType bType, int ldb, long strideB,
        float beta, DevicePtr c, DType cType, int ldc, long strideC, int batchCount, DeviceStream stream)
    {
        var (operandA, operandB, operandC) = BlasArguments.Gemm(call, transposeA, transposeB, m, n, k,
            a, aType, lda, strideA, b, bType, ldb, strideB, c, cType, ldc, strideC, batchCount);
        // cuBLAS's GEMMs read C and write the result back over it: C is also D.
        BlasOperand[] operands = [operandA, operandB, operandC, operandC, None("bias"), None("aux")];
        var job = new Job(transposeA, transposeB, m, n, k, alpha, beta, batchCount, LtEpilogue.Default, operands);
        device.RunOrCapture("cublas" + call, stream, s =>
        {
            Run(call, job, s);
            ProfileRecorder.Current?.Launch(ProfileEventKind.Blas, "cublas" + call, SeamRecording.GemmDetail(m, n, k, batchCount, aType, cType, beta != 0),
                BlasCost.Gemm(m, n, k, batchCount, aType, cType, beta != 0, alpha != 0));
        });
    }

    private void Run(string call, Job job, DeviceStream stream)
    {
        // An empty output leaves nothing to do (BGRADB's bias is n long, but n is 0 too, or m is 0 and LtMatmul refuses it).
        BlasOperand[] operands = job.M == 0 || job.N == 0 ? [] : job.Operands;
        device.AccessOperands(call, stream, job.BatchCount, operands, addresses =>
        {
            if (addresses.Length == 0) return;
            var host = addresses.ToArray();
            for (int batch = 0; batch < job.BatchCount; batch++) Compute(job, host, batch);
        });
    }

    // One matrix of the batch: pack op(A) and op(B) as double, then each column of D from a column of sums.
    private static void Compute(Job job, nint[] host, int batch)
    {
        int m = job.M, n = job.N, k = job.K;
        BlasOperand[] o = job.Operands;
        bool product = job.Alpha != 0 && k > 0;
        double[] a = product ? Pack(o[SlotA], host[SlotA], batch, job.TransposeA, m, k) : [];
        double[] b = product || job.Epilogue == LtEpilogue.BGradB ? Pack(o[SlotB], host[SlotB], batch, job.TransposeB, k, n) : [];

        void Column(int j, double[] sums)
        {
            Array.Clear(sums);
            if (product)
                for (int p = 0; p < k; p++)
                    TensorPrimitives.MultiplyAdd(a.AsSpan(p * m, m), b[p + (long)j * k], sums, sums);
            for (int i = 0; i < m; i++)
                Epilogue(job, host, batch, i, j, product ? job.Alpha * sums[i] : 0.0);
            if (job.Epilogue == LtEpilogue.BGradB)
            {
                double gradient = 0;
                for (int p = 0; p < k; p++) gradient += b[p + (long)j * k];
                Store(o[SlotBias], host[SlotBias], batch, j, 0, gradient);
            }
        }

        if ((long)m * n * Math.Max(k, 1) < ParallelThreshold)
        {
            var sums = new double[m];
            for (int j = 0; j < n; j++) Column(j, sums);
        }
        else
        {
            Parallel.For(0, n, () => new double[m], (j, _, sums) => { Column(j, sums); return sums; }, _ => { });
        }
    }

    // D[i, j] from the scaled product, C, and the epilogue's extra operands (see LtEpilogue for the definitions).
    private static void Epilogue(Job job, nint[] host, int batch, int i, int j, double scaledProduct)
    {
        BlasOperand[] o = job.Operands;
        double x = scaledProduct;
        if (job.Beta != 0) x += job.Beta * (double)Load(o[SlotC], host[SlotC], batch, i, j);
        switch (job.Epilogue)
        {
            case LtEpilogue.Bias:
                x += Load(o[SlotBias], host[SlotBias], batch, i, 0);
                break;
            case LtEpilogue.GeluAuxBias:
                x += Load(o[SlotBias], host[SlotBias], batch, i, 0);
                Store(o[SlotAux], host[SlotAux], batch, i, j, x);
                x = Gelu(x);
                break;
            case LtEpilogue.GeluBias:
                x = Gelu(x + Load(o[SlotBias], host[SlotBias], batch, i, 0));
                break;
            case LtEpilogue.DGelu:
                x *= GeluDerivative(Load(o[SlotAux], host[SlotAux], batch, i, j));
                break;
        }
        Store(o[SlotD], host[SlotD], batch, i, j, x);
    }

    // op(X) as a rows x columns column-major double array, read from X as stored.
    private static double[] Pack(BlasOperand operand, nint host, int batch, BlasOperation operation, int rows, int columns)
    {
        var packed = new double[(long)rows * columns];
        for (int j = 0; j < columns; j++)
            for (int i = 0; i < rows; i++)
                packed[i + (long)j * rows] = operation == BlasOperation.NoTranspose
                    ? Load(operand, host, batch, i, j)
                    : Load(operand, host, batch, j, i);
        return packed;
    }

    private static float Load(BlasOperand operand, nint host, int batch, long row, long column)
    {
        long index = batch * operand.Stride + row + column * operand.Ld;
        return operand.Type switch
        {
            DType.F32 => ((float*)host)[index],
            DType.BF16 => DTypes.BFloat16ToSingle(((ushort*)host)[index]),
            DType.F16 => (float)((Half*)host)[index],
            _ => throw new InvalidOperationException($"{operand.Name} has type {operand.Type}, which BlasArguments refuses"),
        };
    }

    // Rounds to fp32 (as the accumulator holds it), then to the element type, each to nearest even.
    private static void Store(BlasOperand operand, nint host, int batch, long row, long column, double value)
    {
        long index = batch * operand.Stride + row + column * operand.Ld;
        float single = (float)value;
        switch (operand.Type)
        {
            case DType.F32: ((float*)host)[index] = single; break;
            case DType.BF16: ((ushort*)host)[index] = DTypes.SingleToBFloat16(single); break;
            case DType.F16: ((Half*)host)[index] = (Half)single; break;
            default: throw new InvalidOperationException($"{operand.Name} has type {operand.Type}, which BlasArguments refuses");
        }
    }

    private static BlasOperand None(string name) => new(name, DevicePtr.Null, DType.F32, 0, 0, 1, 0);

    // cuBLASLt's GELU, the tanh form (gelu_new): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
    private const double GeluScale = 0.7978845608028654; // sqrt(2 / pi)
    private const double GeluCubic = 0.044715;

    private static double Gelu(double x) => 0.5 * x * (1 + Math.Tanh(GeluScale * (x + GeluCubic * x * x * x)));

    // d/dx of Gelu: 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2), t = tanh(sqrt(2/pi) (x + 0.044715 x^3)).
    private static double GeluDerivative(double x)
    {
        double t = Math.Tanh(GeluScale * (x + GeluCubic * x * x * x));
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * GeluScale * (1 + 3 * GeluCubic * x * x);
    }
}
