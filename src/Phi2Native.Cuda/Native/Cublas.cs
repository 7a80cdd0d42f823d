using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Phi2Native.Cuda.Native;

// Values verified against cublas_api.h / library_types.h text found in public repositories and the cuBLAS
// documentation (nvmath-python's generated enums): cublasOperation_t N 0, T 1; cudaDataType_t R_32F 0, R_16F 2,
// R_16BF 14; cublasComputeType_t 32F 68, 32F_PEDANTIC 69, 32F_FAST_TF32 77 (and the others listed); cublasMath_t
// DEFAULT 0, PEDANTIC 2, TF32_TENSOR_OP 3, DISALLOW_REDUCED_PRECISION_REDUCTION 16; CUBLAS_GEMM_DEFAULT -1; the
// cublasStatus_t codes 1, 3, 7, 8, 13, 15; and the cublasGemmEx / cublasGemmStridedBatchedEx signatures.

/// <summary>cublasStatus_t, returned by every cuBLAS and cuBLASLt call (cublas_api.h).</summary>
internal enum CublasStatus
{
    Success = 0,
    NotInitialized = 1,
    AllocFailed = 3,
    InvalidValue = 7,
    ArchMismatch = 8,
    MappingError = 11,
    ExecutionFailed = 13,
    InternalError = 14,
    NotSupported = 15,
    LicenseError = 16,
}

/// <summary>cublasOperation_t: how an operand is read (cublas_api.h).</summary>
internal enum CublasOperation
{
    N = 0,
    T = 1,
    C = 2,
}

/// <summary>cudaDataType_t values the engine uses for matrix element types (library_types.h).</summary>
internal enum CudaDataType
{
    R32F = 0,
    R64F = 1,
    R16F = 2,
    R8I = 3,
    R32I = 10,
    R16BF = 14,
}

/// <summary>cublasComputeType_t: the precision products accumulate in (cublas_api.h).</summary>
internal enum CublasComputeType
{
    Compute16F = 64,
    Compute32F = 68,
    Compute32FPedantic = 69,
    Compute64F = 70,
    Compute32I = 72,
    Compute32FFast16F = 74,
    Compute32FFast16BF = 75,
    Compute32FFastTF32 = 77,
}

/// <summary>cublasMath_t (cublas_api.h).</summary>
[Flags]
internal enum CublasMath
{
    Default = 0,
    Pedantic = 2,
    TF32TensorOp = 3,
    /// <summary>Forbid reduced-precision reductions inside a product (fp16/bf16 split-K partial sums).</summary>
    DisallowReducedPrecisionReduction = 16,
}

/// <summary>cublasGemmAlgo_t values (cublas_api.h); everything since CUDA 11 picks its own algorithm.</summary>
internal enum CublasGemmAlgo
{
    Default = -1,
    DefaultTensorOp = 99,
}

/// <summary>
/// cuBLAS (libcublas), bound with <c>LibraryImport</c>. Handles are <see cref="nint"/>; matrix pointers
/// are device addresses as <see cref="ulong"/>, the same representation as CUdeviceptr (both are 8-byte
/// integer-class arguments in the 64-bit C ABI); alpha and beta are host pointers (the default pointer mode).
/// Matrices are column-major, as in cuBLAS itself.
/// </summary>
internal static unsafe partial class Cublas
{
    /// <summary>The logical library name the resolver maps to <c>libcublas.so.13</c> or <c>.12</c>.</summary>
    internal const string Library = NativeLibraryResolver.Cublas;

    static Cublas() => NativeLibraryResolver.EnsureRegistered();

    [LibraryImport(Library, EntryPoint = "cublasCreate_v2")] internal static partial CublasStatus cublasCreate(out nint handle);
    [LibraryImport(Library, EntryPoint = "cublasDestroy_v2")] internal static partial CublasStatus cublasDestroy(nint handle);
    [LibraryImport(Library, EntryPoint = "cublasSetStream_v2")] internal static partial CublasStatus cublasSetStream(nint handle, nint stream);
    [LibraryImport(Library)] internal static partial CublasStatus cublasSetMathMode(nint handle, CublasMath mode);
    [LibraryImport(Library)] internal static partial nint cublasGetStatusName(CublasStatus status);
    [LibraryImport(Library)] internal static partial nint cublasGetStatusString(CublasStatus status);

    /// <summary>C = alpha op(A) op(B) + beta C, with per-operand element types and a compute type.</summary>
    [LibraryImport(Library)]
    internal static partial CublasStatus cublasGemmEx(nint handle, CublasOperation transa, CublasOperation transb,
        int m, int n, int k, void* alpha,
        ulong a, CudaDataType aType, int lda,
        ulong b, CudaDataType bType, int ldb, void* beta,
        ulong c, CudaDataType cType, int ldc,
        CublasComputeType computeType, CublasGemmAlgo algo);

    /// <summary><see cref="cublasGemmEx"/> over <paramref name="batchCount"/> matrices at fixed element strides.</summary>
    [LibraryImport(Library)]
    internal static partial CublasStatus cublasGemmStridedBatchedEx(nint handle, CublasOperation transa, CublasOperation transb,
        int m, int n, int k, void* alpha,
        ulong a, CudaDataType aType, int lda, long strideA,
        ulong b, CudaDataType bType, int ldb, long strideB, void* beta,
        ulong c, CudaDataType cType, int ldc, long strideC,
        int batchCount, CublasComputeType computeType, CublasGemmAlgo algo);

    /// <summary>Throws <see cref="CudaException"/> unless <paramref name="status"/> is success.</summary>
    internal static void Check(CublasStatus status, [CallerArgumentExpression(nameof(status))] string call = "")
    {
        if (status != CublasStatus.Success) throw Error(status, call);
    }

    /// <summary>Builds the exception for a failed call, asking cuBLAS for the status's name and text.</summary>
    internal static CudaException Error(CublasStatus status, string call)
    {
        var (name, text) = Describe(status);
        return new CudaException(CudaException.CublasLibrary, CudaException.CallName(call), (int)status, name, text);
    }

    /// <summary>cuBLAS's name and text for <paramref name="status"/>, or the numeric value where cuBLAS is not loaded.</summary>
    internal static (string Name, string Text) Describe(CublasStatus status)
    {
        string? name = null, text = null;
        try
        {
            name = Marshal.PtrToStringUTF8(cublasGetStatusName(status));
            text = Marshal.PtrToStringUTF8(cublasGetStatusString(status));
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { }
        return (name ?? CudaException.Fallback("cublasStatus_t", (int)status, typeof(CublasStatus)),
                text ?? "no description (cublasGetStatusString unavailable)");
    }
}
