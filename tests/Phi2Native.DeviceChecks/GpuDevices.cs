using Phi2Native.Cuda;

namespace Phi2Native.DeviceChecks;

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
}
