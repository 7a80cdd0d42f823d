using Phi2Native.Tensors;

namespace Phi2Native.Cuda;

/// <summary>How a GEMM reads an operand: as stored, or transposed (cublasOperation_t's CUBLAS_OP_N and CUBLAS_OP_T).</summary>
/// <remarks>The values are cuBLAS's own, so a cast gives the C enum. There is no conjugate: every type here is real.</remarks>
internal enum BlasOperation
{
    /// <summary>op(X) = X (CUBLAS_OP_N).</summary>
    NoTranspose = 0,

    /// <summary>op(X) = X^T (CUBLAS_OP_T).</summary>
    Transpose = 1,
}

/// <summary>
/// The matrix products of a device, with exactly cuBLAS's and cuBLASLt's semantics and arguments, so backend code
/// reads like the cuBLAS calls it makes and runs unchanged on <see cref="Emulator.EmulatedDevice"/> (a CPU reference that
/// checks every operand's memory) and on a GPU (<see cref="Gpu.CudaBlas"/>).
/// </summary>
/// <remarks>
/// <para>
/// Matrices are column-major: element (i, j) of a matrix with leading dimension ld is at element offset
/// i + j * ld. op(A) is m x k, op(B) is k x n, C and D are m x n. Products accumulate in fp32 (cuBLAS's
/// CUBLAS_COMPUTE_32F; alpha and beta are fp32, the scale type); inputs are widened exactly and each output
/// is rounded once to its type, to nearest even.
/// </para>
/// <para>
/// Types (cuBLAS's table for CUBLAS_COMPUTE_32F): A and B share a type; with F32 inputs the output is F32, with
/// BF16 or F16 inputs the output is the input type or F32. When beta is 0, C is not read (it may hold NaN or
/// garbage), as in cuBLAS. Arguments are validated as cuBLAS does (sizes, leading dimensions, types) and a
/// violation throws <see cref="BlasArgumentException"/> naming the argument; work is queued on the stream.
/// </para>
/// </remarks>
internal interface IBlas
{
    /// <summary>
    /// cublasGemmEx: C = alpha op(A) op(B) + beta C, with A m x k after <paramref name="transposeA"/> (stored
    /// m x k, or k x m when transposed), B k x n after <paramref name="transposeB"/>, and C m x n.
    /// </summary>
    /// <param name="transposeA">How A is read (transa).</param>
    /// <param name="transposeB">How B is read (transb).</param>
    /// <param name="m">Rows of op(A) and of C, at least 0.</param>
    /// <param name="n">Columns of op(B) and of C, at least 0.</param>
    /// <param name="k">Columns of op(A) and rows of op(B), at least 0.</param>
    /// <param name="alpha">Scales the product; when 0, A and B are not read.</param>
    /// <param name="a">A's first element.</param>
    /// <param name="aType">A's element type (F32, BF16 or F16).</param>
    /// <param name="lda">A's leading dimension: at least max(1, rows of A as stored).</param>
    /// <param name="b">B's first element.</param>
    /// <param name="bType">B's element type; must equal <paramref name="aType"/>.</param>
    /// <param name="ldb">B's leading dimension: at least max(1, rows of B as stored).</param>
    /// <param name="beta">Scales C; when 0, C is not read.</param>
    /// <param name="c">C's first element: read (unless beta is 0) and written.</param>
    /// <param name="cType">C's element type.</param>
    /// <param name="ldc">C's leading dimension: at least max(1, m).</param>
    /// <param name="stream">The stream the product is queued on.</param>
    void GemmEx(BlasOperation transposeA, BlasOperation transposeB, int m, int n, int k,
        float alpha, DevicePtr a, DType aType, int lda, DevicePtr b, DType bType, int ldb,
        float beta, DevicePtr c, DType cType, int ldc, DeviceStream stream);

    /// <summary>
    /// cublasGemmStridedBatchedEx: for i &lt; <paramref name="batchCount"/>, C_i = alpha op(A_i) op(B_i) + beta C_i,
    /// where X_i starts <c>i * strideX</c> elements after X. Arguments are those of <see cref="GemmEx"/> plus the
    /// strides (in elements, at least 0; 0 repeats one matrix across the batch) and the batch count (at least 1).
    /// </summary>
    void GemmStridedBatchedEx(BlasOperation transposeA, BlasOperation transposeB, int m, int n, int k,
        float alpha, DevicePtr a, DType aType, int lda, long strideA, DevicePtr b, DType bType, int ldb, long strideB,
        float beta, DevicePtr c, DType cType, int ldc, long strideC, int batchCount, DeviceStream stream);

    /// <summary>
    /// cublasLtMatmul: D = epilogue(alpha op(A) op(B) + beta C), with C and D allowed to differ (same type, shape
    /// and batch; their leading dimensions may differ), an optional strided batch and a fused epilogue. See
    /// <see cref="LtMatmulArguments"/> for every argument and <see cref="LtEpilogue"/> for what each epilogue computes.
    /// </summary>
    void LtMatmul(LtMatmulArguments arguments, DeviceStream stream);

    /// <summary>
    /// Whether <see cref="LtEpilogue.GeluAuxBias"/> is known to compute gelu_new, the tanh form of GELU Phi-2 uses, to
    /// within bf16 rounding: the one switch between LinearGeluOp's fused path (fc1's bias and gelu_new in the GEMM's
    /// epilogue) and its fallback (the GEMM with its BIAS epilogue, then gelu.cu's gelu_new). The emulated device computes
    /// the tanh form by definition and starts true; a GPU starts false until CudaBackend.OpenGpu's probe
    /// (GeluEpilogueProbe) has compared cuBLASLt's output with the CPU's gelu_new and set it. Tests set it either way.
    /// </summary>
    bool GeluEpilogueIsGeluNew { get; set; }

    /// <summary>
    /// Whether <see cref="LtEpilogue.DGelu"/> is known to compute (alpha op(A) op(B) + beta C) times gelu_new'(aux), beta C
    /// included, to within the output's rounding: the switch that lets the product making gelu_new's output gradient
    /// (fc2's dx GEMM) deliver the pre-activation's gradient instead, with no gelu backward pass (GeluGradientFusion).
    /// The emulated device computes it so by definition and starts true; a GPU starts false until CudaBackend.OpenGpu's
    /// probe (GeluEpilogueProbe) has compared cuBLASLt's output with the CPU's and set it. Tests set it either way.
    /// </summary>
    bool DGeluEpilogueIsGeluNew { get; set; }
}
