namespace Phi2Native.Cuda.Native;

/// <summary>One CUDA device as the driver describes it.</summary>
/// <param name="Ordinal">The device's index (CUdevice ordinal).</param>
/// <param name="Name">The marketing name, e.g. "NVIDIA H200".</param>
/// <param name="ComputeCapabilityMajor">Compute capability, major (9 for Hopper).</param>
/// <param name="ComputeCapabilityMinor">Compute capability, minor.</param>
/// <param name="MultiprocessorCount">Number of SMs.</param>
/// <param name="TotalMemoryBytes">Device memory in bytes.</param>
public sealed record CudaDeviceInfo(int Ordinal, string Name, int ComputeCapabilityMajor, int ComputeCapabilityMinor,
    int MultiprocessorCount, long TotalMemoryBytes)
{
    /// <summary>The NVRTC architecture name for this device, e.g. <c>sm_90</c>.</summary>
    public string Architecture => $"sm_{ComputeCapabilityMajor}{ComputeCapabilityMinor}";
}

/// <summary>
/// Whether CUDA can be used in this process: the driver loaded and initialized, its version and the
/// devices, or the reason it cannot. Computed once per process by <see cref="Probe"/>, which never throws,
/// so a host without a GPU learns this in one clear line instead of a crash.
/// </summary>
public sealed class CudaAvailability
{
    private static readonly Lazy<CudaAvailability> Once = new(Run, LazyThreadSafetyMode.ExecutionAndPublication);
    private static int _logged;

    /// <summary>True when the driver loaded, <c>cuInit</c> succeeded and at least one device is present.</summary>
    public bool IsAvailable { get; }

    /// <summary>The driver's CUDA version as cuDriverGetVersion reports it (13000 for 13.0); 0 when the driver did not load.</summary>
    public int DriverVersion { get; }

    /// <summary>The devices, empty when unavailable.</summary>
    public IReadOnlyList<CudaDeviceInfo> Devices { get; }

    /// <summary>The libcuda file loaded (the file the loader mapped when it found it by soname), or null.</summary>
    public string? DriverPath { get; }

    /// <summary>Why CUDA is unavailable, e.g. "no CUDA driver found: libcuda.so.1 is not in ..."; null when available.</summary>
    public string? Reason { get; }

    private CudaAvailability(bool available, int driverVersion, IReadOnlyList<CudaDeviceInfo> devices, string? driverPath, string? reason)
    {
        IsAvailable = available;
        DriverVersion = driverVersion;
        Devices = devices;
        DriverPath = driverPath;
        Reason = reason;
    }

    /// <summary>The driver version as text ("13.0"), or "none".</summary>
    public string DriverVersionText => DriverVersion <= 0 ? "none" : $"{DriverVersion / 1000}.{DriverVersion % 1000 / 10}";

    /// <summary>One line for logs: the devices and driver, or the reason CUDA is unavailable.</summary>
    public string Summary => IsAvailable
        ? $"CUDA driver {DriverVersionText} ({DriverPath}): {Devices.Count} device(s): " +
          string.Join("; ", Devices.Select(d => $"{d.Ordinal}: {d.Name} ({d.Architecture}, {d.MultiprocessorCount} SMs, {d.TotalMemoryBytes / (1L << 20)} MiB)"))
        : $"CUDA unavailable: {Reason}";

    /// <summary>
    /// A report of several lines for the person setting up a machine: every folder searched, the file chosen for libcuda,
    /// NVRTC (and the builtins library beside it), cuBLAS and cuBLASLt (one folder for both) or why none was, and
    /// whether libcuda exports <c>cuEventElapsedTime_v2</c> and <c>cuEventElapsedTime</c>. It loads the libraries it
    /// describes (as their first use would) and never throws; it means as much on a machine without a GPU.
    /// </summary>
    public static string DescribeLibraries() => CudaLibraryReport.Describe();

    /// <summary>
    /// Probes CUDA once per process (thread-safe; later calls return the same object) and never throws.
    /// The first call that passes <paramref name="log"/> receives <see cref="Summary"/>; the line is logged once per process.
    /// </summary>
    public static CudaAvailability Probe(Action<string>? log = null)
    {
        var result = Once.Value;
        if (log is not null && Interlocked.Exchange(ref _logged, 1) == 0) log(result.Summary);
        return result;
    }

    private static CudaAvailability Run()
    {
        string? path = null;
        int version = 0;
        try
        {
            var outcome = NativeLibraryResolver.Load(NativeLibraryResolver.Cuda);
            if (outcome.Handle == 0) return Unavailable(0, null, $"no CUDA driver found: {outcome.Failure}");
            path = outcome.LoadedFrom;

            var r = CudaDriver.cuDriverGetVersion(out version);
            if (r != CuResult.Success) return Unavailable(0, path, $"cuDriverGetVersion failed: {Describe(r)}");
            r = CudaDriver.cuInit(0);
            // CUDA_ERROR_NO_DEVICE, CUDA_ERROR_STUB_LIBRARY (the toolkit's stub libcuda), driver/toolkit mismatch...
            if (r != CuResult.Success) return Unavailable(version, path, $"the CUDA driver at {path} loaded but cuInit failed: {Describe(r)}");
            CudaDriver.Check(CudaDriver.cuDeviceGetCount(out int count));
            if (count == 0) return Unavailable(version, path, $"the CUDA driver at {path} reports no devices");

            var devices = new List<CudaDeviceInfo>(count);
            for (int i = 0; i < count; i++) devices.Add(DescribeDevice(i));
            return new CudaAvailability(true, version, devices, path, null);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or BadImageFormatException)
        {
            return Unavailable(version, path, $"the CUDA driver could not be bound: {e.Message}");
        }
        catch (CudaException e)
        {
            return Unavailable(version, path, e.Message);
        }
    }

    private static unsafe CudaDeviceInfo DescribeDevice(int ordinal)
    {
        CudaDriver.Check(CudaDriver.cuDeviceGet(out int device, ordinal));
        byte* name = stackalloc byte[256];
        CudaDriver.Check(CudaDriver.cuDeviceGetName(name, 256, device));
        CudaDriver.Check(CudaDriver.cuDeviceGetAttribute(out int major, CuDeviceAttribute.ComputeCapabilityMajor, device));
        CudaDriver.Check(CudaDriver.cuDeviceGetAttribute(out int minor, CuDeviceAttribute.ComputeCapabilityMinor, device));
        CudaDriver.Check(CudaDriver.cuDeviceGetAttribute(out int sms, CuDeviceAttribute.MultiprocessorCount, device));
        CudaDriver.Check(CudaDriver.cuDeviceTotalMem(out nuint bytes, device));
        return new CudaDeviceInfo(ordinal, System.Runtime.InteropServices.Marshal.PtrToStringUTF8((nint)name) ?? "", major, minor, sms, (long)bytes);
    }

    private static string Describe(CuResult r)
    {
        var (name, text) = CudaDriver.Describe(r);
        return $"{name} ({(int)r}): {text}";
    }

    private static CudaAvailability Unavailable(int version, string? path, string reason) => new(false, version, [], path, reason);
}
