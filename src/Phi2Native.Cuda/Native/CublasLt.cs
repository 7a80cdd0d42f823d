using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Phi2Native.Cuda.Native;

// Values verified against cublasLt.h text (NVIDIA's header as found in public repositories, and the cuBLAS
// documentation's cublasLtEpilogue_t / cublasLtMatmulDescAttributes_t / cublasLtMatmulPreferenceAttributes_t
// tables, CUDA 12/13): every cublasLtEpilogue_t member below (DEFAULT 1, BIAS 4, GELU 32, GELU_BIAS 36, GELU_AUX 160,
// GELU_AUX_BIAS 164, DGELU 192 = 64 | 128, DGELU_BGRAD 208, BGRADA 256, BGRADB 512); the matmul descriptor attributes
// COMPUTE_TYPE 0 .. TRANSB 4, EPILOGUE 7, BIAS_POINTER 8, BIAS_BATCH_STRIDE 10, EPILOGUE_AUX_POINTER 11,
// EPILOGUE_AUX_LD 12, EPILOGUE_AUX_BATCH_STRIDE 13, EPILOGUE_AUX_DATA_TYPE 22, BIAS_DATA_TYPE 26 and their C types;
// the layout attributes TYPE 0 .. STRIDED_BATCH_OFFSET 6; the preference attributes SEARCH_MODE 0,
// MAX_WORKSPACE_BYTES 1, REDUCTION_SCHEME_MASK 3, MIN_ALIGNMENT_A..D_BYTES 5..8; cublasLtReductionScheme_t.

/// <summary>cublasLtEpilogue_t: what cublasLtMatmul does to the product before storing it (cublasLt.h).</summary>
internal enum CublasLtEpilogue
{
    Default = 1,
    /// <summary>D += bias, the bias broadcast along columns (one value per row of D).</summary>
    Bias = 4,
    Gelu = 32,
    GeluBias = 36,
    GeluAux = 160,
    /// <summary>D = gelu(product + bias), and the pre-GELU values are stored to the aux buffer for backward.</summary>
    GeluAuxBias = 164,
    /// <summary>D = product * gelu'(aux): the GELU backward, reading the pre-GELU values saved by <see cref="GeluAuxBias"/>.</summary>
    DGelu = 192,
    DGeluBGrad = 208,
    BGradA = 256,
    /// <summary>Also reduces B over the product's k dimension into the bias pointer: a Linear layer's bias gradient.</summary>
    BGradB = 512,
}

/// <summary>cublasLtMatmulDescAttributes_t (cublasLt.h).</summary>
internal enum CublasLtMatmulDescAttribute
{
    ComputeType = 0,
    ScaleType = 1,
    PointerMode = 2,
    /// <summary><see cref="CublasOperation"/>, as int32.</summary>
    TransA = 3,
    /// <summary><see cref="CublasOperation"/>, as int32.</summary>
    TransB = 4,
    /// <summary><see cref="CublasLtEpilogue"/>, as uint32.</summary>
    Epilogue = 7,
    /// <summary>Device pointer (8 bytes) to the bias vector, or where BGRADA/BGRADB store the bias gradient.</summary>
    BiasPointer = 8,
    BiasBatchStride = 10,
    /// <summary>Device pointer (8 bytes) to the aux matrix (GELU_AUX* writes it, DGELU* reads it).</summary>
    EpilogueAuxPointer = 11,
    /// <summary>Leading dimension of the aux matrix, as int64.</summary>
    EpilogueAuxLd = 12,
    EpilogueAuxBatchStride = 13,
    EpilogueAuxDataType = 22,
    /// <summary>The bias (or bias gradient) vector's element type, as an int32 <see cref="CudaDataType"/>; -1 (unset) means D's type.</summary>
    BiasDataType = 26,
}

/// <summary>cublasLtMatrixLayoutAttribute_t (cublasLt.h): batching of a layout.</summary>
internal enum CublasLtMatrixLayoutAttribute
{
    Type = 0,
    Order = 1,
    Rows = 2,
    Cols = 3,
    Ld = 4,
    /// <summary>Number of matrices in a batch, as int32.</summary>
    BatchCount = 5,
    /// <summary>Elements between consecutive matrices of a batch, as int64.</summary>
    StridedBatchOffset = 6,
}

/// <summary>cublasLtMatmulPreferenceAttributes_t (cublasLt.h).</summary>
internal enum CublasLtMatmulPreferenceAttribute
{
    SearchMode = 0,
    /// <summary>The largest workspace the heuristic may ask for, as uint64.</summary>
    MaxWorkspaceBytes = 1,
    /// <summary>Which split-K reduction schemes an algorithm may use (<see cref="CublasLtReductionScheme"/> bits), as uint32.</summary>
    ReductionSchemeMask = 3,
    /// <summary>The alignment in bytes A's pointer is guaranteed to have, as uint32 (default 256): smaller excludes algorithms needing more.</summary>
    MinAlignmentABytes = 5,
    /// <summary>As <see cref="MinAlignmentABytes"/>, for B.</summary>
    MinAlignmentBBytes = 6,
    /// <summary>As <see cref="MinAlignmentABytes"/>, for C.</summary>
    MinAlignmentCBytes = 7,
    /// <summary>As <see cref="MinAlignmentABytes"/>, for D.</summary>
    MinAlignmentDBytes = 8,
}

/// <summary>cublasLtReductionScheme_t (cublasLt.h): how the partial sums of a split-K product are combined.</summary>
[Flags]
internal enum CublasLtReductionScheme
{
    None = 0,
    /// <summary>In the output buffer, in the output type: for BF16/F16 outputs, reduced precision.</summary>
    InPlace = 1,
    /// <summary>In the workspace, in the compute type (fp32).</summary>
    ComputeType = 2,
    /// <summary>In the workspace, in the output type: for BF16/F16 outputs, reduced precision.</summary>
    OutputType = 4,
    Mask = 7,
}

/// <summary>cublasLtMatmulAlgo_t: an opaque 64-byte algorithm description (<c>uint64_t data[8]</c>).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct CublasLtMatmulAlgo
{
    /// <summary>The opaque words, copied as cuBLASLt filled them.</summary>
    public fixed ulong Data[8];
}

/// <summary>
/// cublasLtMatmulHeuristicResult_t: one candidate from <see cref="CublasLt.cublasLtMatmulAlgoGetHeuristic"/>.
/// Layout (96 bytes): algo at 0, workspaceSize (size_t) at 64, state at 72, wavesCount at 76, int reserved[4] at 80.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct CublasLtMatmulHeuristicResult
{
    public CublasLtMatmulAlgo Algo;
    public nuint WorkspaceSize;
    public CublasStatus State;
    public float WavesCount;
    public fixed int Reserved[4];
}

/// <summary>
/// cuBLASLt (libcublasLt), bound with <c>LibraryImport</c>: matmul with layouts, preferences, heuristics
/// and epilogues. Handles and descriptors are <see cref="nint"/>; matrices are device addresses as
/// <see cref="ulong"/>; alpha and beta are host pointers of the descriptor's scale type.
/// </summary>
internal static unsafe partial class CublasLt
{
    /// <summary>The logical library name the resolver maps to <c>libcublasLt.so.13</c> or <c>.12</c>.</summary>
    internal const string Library = NativeLibraryResolver.CublasLt;

    static CublasLt() => NativeLibraryResolver.EnsureRegistered();

    [LibraryImport(Library)] internal static partial CublasStatus cublasLtCreate(out nint handle);
    [LibraryImport(Library)] internal static partial CublasStatus cublasLtDestroy(nint handle);
    [LibraryImport(Library)] internal static partial nint cublasLtGetStatusName(CublasStatus status);
    [LibraryImport(Library)] internal static partial nint cublasLtGetStatusString(CublasStatus status);

    [LibraryImport(Library)]
    internal static partial CublasStatus cublasLtMatmulDescCreate(out nint desc, CublasComputeType computeType, CudaDataType scaleType);
    [LibraryImport(Library)] internal static partial CublasStatus cublasLtMatmulDescDestroy(nint desc);
    [LibraryImport(Library)]
    internal static partial CublasStatus cublasLtMatmulDescSetAttribute(nint desc, CublasLtMatmulDescAttribute attribute, void* buffer, nuint sizeInBytes);

    [LibraryImport(Library)]
    internal static partial CublasStatus cublasLtMatrixLayoutCreate(out nint layout, CudaDataType type, ulong rows, ulong cols, long ld);
    [LibraryImport(Library)] internal static partial CublasStatus cublasLtMatrixLayoutDestroy(nint layout);
    [LibraryImport(Library)]
    internal static partial CublasStatus cublasLtMatrixLayoutSetAttribute(nint layout, CublasLtMatrixLayoutAttribute attribute, void* buffer, nuint sizeInBytes);

    [LibraryImport(Library)] internal static partial CublasStatus cublasLtMatmulPreferenceCreate(out nint preference);
    [LibraryImport(Library)] internal static partial CublasStatus cublasLtMatmulPreferenceDestroy(nint preference);
    [LibraryImport(Library)]
    internal static partial CublasStatus cublasLtMatmulPreferenceSetAttribute(nint preference, CublasLtMatmulPreferenceAttribute attribute, void* buffer, nuint sizeInBytes);

    /// <summary>Fills up to <paramref name="requestedAlgoCount"/> candidates, best first; <paramref name="returnAlgoCount"/> says how many.</summary>
    [LibraryImport(Library)]
    internal static partial CublasStatus cublasLtMatmulAlgoGetHeuristic(nint lightHandle, nint operationDesc,
        nint aDesc, nint bDesc, nint cDesc, nint dDesc, nint preference,
        int requestedAlgoCount, CublasLtMatmulHeuristicResult* heuristicResults, out int returnAlgoCount);

    /// <summary>D = epilogue(alpha op(A) op(B) + beta C); <paramref name="algo"/> may be null (cuBLASLt then runs its own heuristic).</summary>
    [LibraryImport(Library)]
    internal static partial CublasStatus cublasLtMatmul(nint lightHandle, nint computeDesc, void* alpha,
        ulong a, nint aDesc, ulong b, nint bDesc, void* beta,
        ulong c, nint cDesc, ulong d, nint dDesc,
        CublasLtMatmulAlgo* algo, ulong workspace, nuint workspaceSizeInBytes, nint stream);

    /// <summary>Sets a fixed-size attribute on a matmul descriptor from a value (int32, uint32, int64 or a pointer).</summary>
    internal static void SetAttribute<T>(nint desc, CublasLtMatmulDescAttribute attribute, T value) where T : unmanaged =>
        Check(cublasLtMatmulDescSetAttribute(desc, attribute, &value, (nuint)sizeof(T)));

    /// <summary>Sets a fixed-size attribute on a matrix layout from a value.</summary>
    internal static void SetAttribute<T>(nint layout, CublasLtMatrixLayoutAttribute attribute, T value) where T : unmanaged =>
        Check(cublasLtMatrixLayoutSetAttribute(layout, attribute, &value, (nuint)sizeof(T)));

    /// <summary>Sets a fixed-size attribute on a matmul preference from a value.</summary>
    internal static void SetAttribute<T>(nint preference, CublasLtMatmulPreferenceAttribute attribute, T value) where T : unmanaged =>
        Check(cublasLtMatmulPreferenceSetAttribute(preference, attribute, &value, (nuint)sizeof(T)));

    /// <summary>Throws <see cref="CudaException"/> unless <paramref name="status"/> is success.</summary>
    internal static void Check(CublasStatus status, [CallerArgumentExpression(nameof(status))] string call = "")
    {
        if (status != CublasStatus.Success) throw Error(status, call);
    }

    /// <summary>Builds the exception for a failed call, asking cuBLASLt for the status's name and text.</summary>
    internal static CudaException Error(CublasStatus status, string call)
    {
        var (name, text) = Describe(status);
        return new CudaException(CudaException.CublasLtLibrary, CudaException.CallName(call), (int)status, name, text);
    }

    /// <summary>cuBLASLt's name and text for <paramref name="status"/>, or the numeric value where cuBLASLt is not loaded.</summary>
    internal static (string Name, string Text) Describe(CublasStatus status)
    {
        string? name = null, text = null;
        try
        {
            name = Marshal.PtrToStringUTF8(cublasLtGetStatusName(status));
            text = Marshal.PtrToStringUTF8(cublasLtGetStatusString(status));
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { }
        return (name ?? CudaException.Fallback("cublasStatus_t", (int)status, typeof(CublasStatus)),
                text ?? "no description (cublasLtGetStatusString unavailable)");
    }
}
