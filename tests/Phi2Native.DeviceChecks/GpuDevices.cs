using Phi2Native.Cuda;

namespace Phi2Native.DeviceChecks;

/// <summary>How NVRTC did on one kernel file, for the GPU runner's first table.</summary>
/// <param name="File">The kernel file, e.g. <c>layernorm.cu</c>.</param>
/// <param name="Compiled">Whether a loadable image exists for the device now.</param>
/// <param name="FromCache">Whether the image came from the disk cache instead of a compile.</param>
/// <param name="Seconds">Time to compile (or read from the cache) and load.</param>
/// <param name="Log">NVRTC's log when the compile failed (or warned); null when empty.</param>
public sealed record KernelCompileReport(string File, bool Compiled, bool FromCache, double Seconds, string? Log);

/// <summary>Opens the real GPU for the checks, or says why there is none.</summary>
public static class GpuDevices
{
    /// <summary>
    /// The first CUDA device, or null with <paramref name="reason"/> saying why not (no driver, no device, or the
    /// real device layer failed to start). Never throws.
    /// </summary>
    public static IDeviceApi? TryOpen(out string reason)
    {
        var probe = CudaAvailability.Probe();
        if (!probe.IsAvailable)
        {
            reason = probe.Reason ?? "CUDA is unavailable";
            return null;
        }
        reason = "the real CUDA device layer is not built yet";
        return null;
    }

    /// <summary>Compiles (or loads from the disk cache) every embedded kernel file for <paramref name="device"/>, one report per file.</summary>
    public static IReadOnlyList<KernelCompileReport> CompileAllKernels(IDeviceApi device) =>
        throw new NotSupportedException($"{device.Name} does not compile kernels with NVRTC");
}
