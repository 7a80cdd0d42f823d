using NUnit.Framework;
using Phi2Native.Tests.Support;

using static Phi2Native.Tests.Support.GpuGate;
namespace Phi2Native.Tests.Cuda;

/// <summary>The GPU fixtures skip only without a GPU: a GPU that CUDA cannot use or open fails them, naming why.</summary>
[TestFixture]
public class GpuGateTests
{
    [Test]
    public void AWorkingGpuRuns() => Assert.That(Decide(true, null, null, "/dev/nvidia0").Verdict, Is.EqualTo(Verdict.Run));

    [Test]
    public void NoGpuSkipsWithTheProbesReason()
    {
        var (verdict, reason) = Decide(false, "no CUDA driver found: libcuda.so.1 is not in the loader's paths", null, hardware: null);
        Assert.That(verdict, Is.EqualTo(Verdict.Skip));
        Assert.That(reason, Does.Contain("libcuda.so.1"));
    }

    [Test]
    public void AGpuThatCudaCannotUseFails()
    {
        var (verdict, reason) = Decide(false, "cuInit failed: CUDA_ERROR_SYSTEM_DRIVER_MISMATCH (803)", null, "/dev/nvidia0");
        Assert.That(verdict, Is.EqualTo(Verdict.Fail));
        Assert.That(reason, Does.Contain("/dev/nvidia0").And.Contain("CUDA_ERROR_SYSTEM_DRIVER_MISMATCH"));
    }

    [Test]
    public void AGpuThatDoesNotOpenFailsEvenWithoutOtherEvidence()
    {
        var (verdict, reason) = Decide(true, null, "the device layer failed to start: KernelCompileException: ...", hardware: null);
        Assert.That(verdict, Is.EqualTo(Verdict.Fail));
        Assert.That(reason, Does.Contain("does not open").And.Contain("KernelCompileException"));
    }

    [Test]
    public void WithoutHardwareEvidenceThisMachineSkipsAndWithItCudaWorks()
    {
        // Whatever this machine is, the two sources agree here, or the GPU fixtures fail on it (with the reason above).
        var probe = Phi2Native.Cuda.Native.CudaAvailability.Probe();
        string? hardware = HardwareEvidence();
        TestContext.Out.WriteLine($"hardware: {hardware ?? "none"}; CUDA: {probe.Summary}");
        if (hardware is null && !probe.IsAvailable) Assert.That(Decide(false, probe.Reason, null, null).Verdict, Is.EqualTo(Verdict.Skip));
        else Assert.That(probe.IsAvailable, Is.True, $"NVIDIA hardware ({hardware}) but no usable CUDA: {probe.Reason}");
    }
}
