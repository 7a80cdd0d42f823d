using Phi2Native.Tensors;

namespace Phi2Native.Cuda;

/// <summary>
/// What <see cref="IBlas.LtMatmul"/> does after the product (cublasLtEpilogue_t). Below, P = alpha op(A) op(B) +
/// beta C (beta C omitted when beta is 0), i &lt; m indexes rows and j &lt; n columns of D.
/// </summary>
/// <remarks>
/// <para>
/// Semantics as documented in the cuBLAS documentation, section "cublasLtEpilogue_t" and the
/// CUBLASLT_MATMUL_DESC_BIAS_POINTER / _EPILOGUE_AUX_POINTER / _EPILOGUE_AUX_LD rows of
/// "cublasLtMatmulDescAttributes_t" (docs.nvidia.com/cuda/cublas, CUDA 12/13), and in the comments of cublasLt.h:
/// the bias of BIAS epilogues has one element per row of D and is broadcast along the columns; BGRADB's bias
/// gradient has one element per column of D, "the reduction happens over the GEMM's k dimension"; the GELU aux
/// matrix holds the GELU input, has D's element type (CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE left at its
/// default) and its leading dimension "must be divisible by 8 and be no less than the number of rows in the output
/// matrix"; and "GELU (Gaussian Error Linear Unit) is approximated by
/// 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))", which is HF's gelu_new, Phi-2's activation. The FP8 section
/// of the same documentation gives the order Aux = alpha op(A) op(B) + beta C + bias, D = Epilogue(Aux).
/// </para>
/// <para>
/// Not stated there, and so still to be confirmed on a GPU (BlasChecks has a check for each): that DGELU multiplies
/// the whole of P (beta C included) by gelu'(aux), and that BGRADB's sum is not scaled by alpha.
/// </para>
/// </remarks>
internal enum LtEpilogue
{
    /// <summary>CUBLASLT_EPILOGUE_DEFAULT: D = P.</summary>
    Default,

    /// <summary>CUBLASLT_EPILOGUE_BIAS: D[i, j] = P[i, j] + bias[i] (bias has m elements, broadcast along columns).</summary>
    Bias,

    /// <summary>
    /// CUBLASLT_EPILOGUE_GELU_AUX_BIAS: X = P + bias[i] (as for <see cref="Bias"/>), aux[i, j] = X[i, j] (the GELU
    /// input, kept for backward), D = gelu(X) in the tanh form. A Linear layer followed by gelu_new, forward.
    /// </summary>
    GeluAuxBias,

    /// <summary>
    /// CUBLASLT_EPILOGUE_DGELU: D[i, j] = P[i, j] * gelu'(aux[i, j]), with aux the GELU input saved by
    /// <see cref="GeluAuxBias"/> (read, not written): the gradient through gelu_new, fused into the product that
    /// produces the gradient of its output.
    /// </summary>
    DGelu,

    /// <summary>
    /// CUBLASLT_EPILOGUE_BGRADB: D = P, and bias[j] = sum over p &lt; k of op(B)[p, j] (n elements, written): a
    /// Linear layer's bias gradient, computed while op(B) (the output gradient) is read for the weight gradient.
    /// </summary>
    BGradB,

    /// <summary>
    /// CUBLASLT_EPILOGUE_GELU_BIAS: D = gelu(P + bias[i]) in the tanh form, as <see cref="GeluAuxBias"/> without the aux
    /// matrix: a Linear layer followed by gelu_new at inference, where nothing is saved for backward.
    /// </summary>
    GeluBias,
}

/// <summary>
/// The arguments of <see cref="IBlas.LtMatmul"/>: cublasLtMatmul's, with the matmul descriptor's attributes and the
/// four matrix layouts (column-major, strided batch) flattened into one record. Leading dimensions and strides are
/// in elements, int64 as cuBLASLt takes them.
/// </summary>
/// <remarks>
/// Shapes: op(A) m x k (stored m x k, or k x m when transposed), op(B) k x n, C and D m x n, aux m x n.
/// cuBLASLt requires C and D to share type, shape and batch (only the leading dimension and stride may differ);
/// C may be <see cref="DevicePtr.Null"/> when beta is 0. Unlike cuBLAS's GEMMs, cuBLASLt does not document empty
/// problems, so m, n and k must be at least 1.
/// </remarks>
internal sealed record LtMatmulArguments
{
    /// <summary>How A is read (CUBLASLT_MATMUL_DESC_TRANSA).</summary>
    public BlasOperation TransposeA { get; init; }

    /// <summary>How B is read (CUBLASLT_MATMUL_DESC_TRANSB).</summary>
    public BlasOperation TransposeB { get; init; }

    /// <summary>Rows of op(A), C and D (at least 1).</summary>
    public required int M { get; init; }

    /// <summary>Columns of op(B), C and D (at least 1).</summary>
    public required int N { get; init; }

    /// <summary>Columns of op(A), rows of op(B) (at least 1).</summary>
    public required int K { get; init; }

    /// <summary>Scales the product.</summary>
    public float Alpha { get; init; } = 1f;

    /// <summary>Scales C; when 0, C is not read.</summary>
    public float Beta { get; init; }

    /// <summary>A's first element.</summary>
    public required DevicePtr A { get; init; }

    /// <summary>A's element type (F32, BF16 or F16).</summary>
    public required DType AType { get; init; }

    /// <summary>A's leading dimension: at least max(1, rows of A as stored).</summary>
    public required long Lda { get; init; }

    /// <summary>B's first element.</summary>
    public required DevicePtr B { get; init; }

    /// <summary>B's element type; must equal <see cref="AType"/>.</summary>
    public required DType BType { get; init; }

    /// <summary>B's leading dimension: at least max(1, rows of B as stored).</summary>
    public required long Ldb { get; init; }

    /// <summary>C's first element, or null when <see cref="Beta"/> is 0. C has D's type; it may be D itself.</summary>
    public DevicePtr C { get; init; }

    /// <summary>C's leading dimension: at least max(1, m) when C is given.</summary>
    public long Ldc { get; init; }

    /// <summary>D's first element (written).</summary>
    public required DevicePtr D { get; init; }

    /// <summary>D's (and C's) element type: <see cref="AType"/>, or F32.</summary>
    public required DType DType { get; init; }

    /// <summary>D's leading dimension: at least max(1, m).</summary>
    public required long Ldd { get; init; }

    /// <summary>Number of products (CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT), at least 1.</summary>
    public int BatchCount { get; init; } = 1;

    /// <summary>Elements from one A to the next in a batch (CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET), at least 0.</summary>
    public long StrideA { get; init; }

    /// <summary>Elements from one B to the next in a batch, at least 0.</summary>
    public long StrideB { get; init; }

    /// <summary>Elements from one C to the next in a batch, at least 0.</summary>
    public long StrideC { get; init; }

    /// <summary>Elements from one D to the next in a batch, at least 0.</summary>
    public long StrideD { get; init; }

    /// <summary>What happens after the product (CUBLASLT_MATMUL_DESC_EPILOGUE).</summary>
    public LtEpilogue Epilogue { get; init; }

    /// <summary>
    /// The bias (read by <see cref="LtEpilogue.Bias"/>, <see cref="LtEpilogue.GeluBias"/> and <see cref="LtEpilogue.GeluAuxBias"/>, m elements) or the
    /// bias gradient (written by <see cref="LtEpilogue.BGradB"/>, n elements); null for the other epilogues
    /// (CUBLASLT_MATMUL_DESC_BIAS_POINTER).
    /// </summary>
    public DevicePtr Bias { get; init; }

    /// <summary>The bias's element type (CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE); cuBLASLt's table allows only D's type.</summary>
    public DType BiasType { get; init; }

    /// <summary>Elements from one bias vector to the next in a batch (CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE), at least 0.</summary>
    public long BiasBatchStride { get; init; }

    /// <summary>
    /// The GELU input matrix, m x n of D's type: written by <see cref="LtEpilogue.GeluAuxBias"/>, read by
    /// <see cref="LtEpilogue.DGelu"/>; null for the other epilogues (CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER).
    /// </summary>
    public DevicePtr Aux { get; init; }

    /// <summary>The aux matrix's leading dimension (CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD): at least m and a multiple of 8.</summary>
    public long AuxLd { get; init; }

    /// <summary>Elements from one aux matrix to the next in a batch (CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE): a multiple of 8.</summary>
    public long AuxBatchStride { get; init; }
}
