using Phi2Native.Cuda;
using Phi2Native.Cuda.Native;

namespace Phi2Native.GpuCheck;

/// <summary>
/// Tells a sticky CUDA fault from an ordinary error. A kernel that faults (an illegal address, a trap, an assert)
/// leaves its context unusable: the driver returns the same error from every later call in the process, so after
/// one the runner names the check that caused it and runs no more work in that process.
/// </summary>
internal static class StickyFault
{
    /// <summary>The CUresult codes that cuda.h documents as leaving the context (the process) unusable.</summary>
    private static readonly Dictionary<int, string> s_sticky = new()
    {
        [700] = "CUDA_ERROR_ILLEGAL_ADDRESS",
        [702] = "CUDA_ERROR_LAUNCH_TIMEOUT",
        [710] = "CUDA_ERROR_ASSERT",
        [714] = "CUDA_ERROR_HARDWARE_STACK_ERROR",
        [715] = "CUDA_ERROR_ILLEGAL_INSTRUCTION",
        [716] = "CUDA_ERROR_MISALIGNED_ADDRESS",
        [717] = "CUDA_ERROR_INVALID_ADDRESS_SPACE",
        [718] = "CUDA_ERROR_INVALID_PC",
        [719] = "CUDA_ERROR_LAUNCH_FAILED",
    };

    /// <summary>The sticky CUresult codes, for tests and the usage text.</summary>
    public static IReadOnlyCollection<int> Codes => s_sticky.Keys;

    /// <summary>
    /// The CUDA error name when <paramref name="exception"/> is, or wraps (inner or aggregated exceptions), a CUDA
    /// driver error that kills the context; null for anything else (NVRTC and cuBLAS statuses, out of memory, an
    /// invalid value, a wrong answer). Pure: looks at the exception only.
    /// </summary>
    public static string? Classify(Exception? exception)
    {
        if (exception is null) return null;
        if (exception is CudaException { Library: CudaException.DriverLibrary } cuda && s_sticky.TryGetValue(cuda.Code, out string? name))
            return cuda.ErrorName.StartsWith("CUDA_ERROR_", StringComparison.Ordinal) ? cuda.ErrorName : name;
        if (exception is AggregateException aggregate)
        {
            foreach (var inner in aggregate.InnerExceptions)
                if (Classify(inner) is { } found) return found;
            return null;
        }
        return Classify(exception.InnerException);
    }

    /// <summary>A sticky driver error as the CUDA layer throws it (for the self-test's planted faults).</summary>
    public static CudaException Planted(string call = "cuStreamSynchronize", int code = 700) =>
        new(CudaException.DriverLibrary, call, code, s_sticky.GetValueOrDefault(code, $"CUresult {code}"), "planted by the self-test");
}
