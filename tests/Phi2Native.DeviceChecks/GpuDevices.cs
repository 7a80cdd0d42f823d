using System.Diagnostics;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Gpu;
using Phi2Native.Cuda.Native;

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
    /// The first CUDA device (a <see cref="CudaDevice"/>, kernel cache from the environment), or null with
    /// <paramref name="reason"/> saying why not (no driver, no device, or the device layer failed to start). Never throws.
    /// </summary>
    public static IDeviceApi? TryOpen(out string reason)
    {
        var probe = CudaAvailability.Probe();
        if (!probe.IsAvailable)
        {
            reason = probe.Reason ?? "CUDA is unavailable";
            return null;
        }
        try
        {
            var device = CudaDevice.Open(0);
            reason = "";
            return device;
        }
        catch (Exception e) // the contract is "never throws": whatever failed becomes the reason
        {
            reason = $"CUDA is available ({probe.Summary}) but the device layer failed to start: {e.GetType().Name}: {e.Message}";
            return null;
        }
    }

    /// <summary>
    /// Compiles (or reads from the disk cache) and loads every embedded kernel file for <paramref name="device"/>, one
    /// report per file in file order. A file that fails is reported with NVRTC's log (or the driver's error when the
    /// image does not load) and the others still run. When <paramref name="stop"/> says so before a file, that file
    /// and the rest are left out (fewer reports than files: the caller says they did not run).
    /// </summary>
    /// <exception cref="NotSupportedException"><paramref name="device"/> is not a <see cref="CudaDevice"/> (the emulator compiles nothing at run time).</exception>
    public static IReadOnlyList<KernelCompileReport> CompileAllKernels(IDeviceApi device, Func<bool>? stop = null)
    {
        ArgumentNullException.ThrowIfNull(device);
        if (device is not CudaDevice cuda) throw new NotSupportedException($"{device.Name} does not compile kernels with NVRTC");
        var reports = new List<KernelCompileReport>();
        foreach (string file in cuda.KernelFiles)
        {
            if (stop?.Invoke() == true) break;
            var clock = Stopwatch.StartNew();
            try
            {
                var image = cuda.LoadKernelFile(file);
                reports.Add(new KernelCompileReport(file, true, image.Origin != KernelImageOrigin.Compiled, clock.Elapsed.TotalSeconds,
                    string.IsNullOrWhiteSpace(image.Log) ? null : image.Log));
            }
            catch (KernelCompileException e)
            {
                reports.Add(new KernelCompileReport(file, false, false, clock.Elapsed.TotalSeconds, string.IsNullOrWhiteSpace(e.Log) ? e.Message : e.Log));
            }
            catch (CudaException e)
            {
                reports.Add(new KernelCompileReport(file, false, false, clock.Elapsed.TotalSeconds, e.Message));
            }
        }
        return reports;
    }
}
