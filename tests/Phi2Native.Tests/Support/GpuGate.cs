using NUnit.Framework;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Native;

namespace Phi2Native.Tests.Support;

/// <summary>
/// Whether the [Category("Gpu")] fixtures run, are skipped or fail. They are skipped only where there is no GPU: no
/// NVIDIA device node or driver entry and no CUDA device. A GPU that is there but that CUDA cannot use (a broken or
/// mismatched driver, a device that does not open) fails them with the reason, as the GPU runner does, instead of
/// passing CI as "skipped". A machine that has such a GPU on purpose leaves the category out: --filter TestCategory!=Gpu.
/// </summary>
public static class GpuGate
{
    /// <summary>What the GPU fixtures do.</summary>
    public enum Verdict { Run, Skip, Fail }

    /// <summary>
    /// The decision, from what CUDA's probe says (<paramref name="cudaAvailable"/>, with <paramref name="probeReason"/>
    /// when not), why opening the device failed (<paramref name="openFailure"/>, or null), and the evidence of NVIDIA
    /// hardware apart from CUDA (<paramref name="hardware"/>, or null).
    /// </summary>
    public static (Verdict Verdict, string Reason) Decide(bool cudaAvailable, string? probeReason, string? openFailure, string? hardware)
    {
        if (cudaAvailable)
            return openFailure is null ? (Verdict.Run, "") : (Verdict.Fail, $"CUDA reports a GPU, but it does not open: {openFailure}");
        string why = probeReason ?? "CUDA is unavailable";
        return hardware is null
            ? (Verdict.Skip, $"needs a CUDA GPU: {why}")
            : (Verdict.Fail, $"a GPU is present ({hardware}), but CUDA cannot use it: {why}");
    }

    /// <summary>NVIDIA hardware as the kernel shows it, whether or not CUDA works: a /dev/nvidiaN node or a /proc/driver/nvidia/gpus entry; null when neither.</summary>
    public static string? HardwareEvidence()
    {
        if (Directory.Exists("/dev"))
        {
            string? node = Directory.EnumerateFiles("/dev", "nvidia*").FirstOrDefault(path => path.Length > "/dev/nvidia".Length && char.IsAsciiDigit(path["/dev/nvidia".Length]));
            if (node is not null) return node;
        }
        const string gpus = "/proc/driver/nvidia/gpus";
        return Directory.Exists(gpus) && Directory.EnumerateFileSystemEntries(gpus).FirstOrDefault() is { } entry ? entry : null;
    }

    /// <summary>
    /// For a GPU fixture's one-time set-up: returns when the tests are to run; otherwise ignores them (no GPU) or fails
    /// them (a GPU that cannot be used), with the reason. <paramref name="openFailure"/> is why the fixture's own device
    /// did not open, when it tried.
    /// </summary>
    public static void Require(string? openFailure = null)
    {
        var probe = CudaAvailability.Probe(TestContext.Progress.WriteLine);
        var (verdict, reason) = Decide(probe.IsAvailable, probe.Reason, openFailure, HardwareEvidence());
        if (verdict == Verdict.Skip) Assert.Ignore(reason);
        if (verdict == Verdict.Fail) Assert.Fail(reason);
    }
}
