using NUnit.Framework;
using Phi2Native.Cuda;

namespace Phi2Native.Tests.Cuda;

/// <summary>The once-only probe: on a machine without CUDA it reports the missing driver cleanly.</summary>
[TestFixture]
public class CudaAvailabilityTests
{
    [Test]
    public void Probe_WithoutADriver_SaysSoAndListsWhereItLooked()
    {
        var probe = CudaAvailability.Probe();
        if (probe.IsAvailable) Assert.Ignore($"this machine has CUDA ({probe.Summary}); the no-driver path cannot be shown here");

        Assert.That(probe.Reason, Does.StartWith("no CUDA driver found: libcuda.so.1 is not in the loader's paths"));
        Assert.That(probe.Reason, Does.Contain("/usr/local/nvidia/lib64"));
        Assert.That(probe.DriverVersion, Is.EqualTo(0));
        Assert.That(probe.DriverVersionText, Is.EqualTo("none"));
        Assert.That(probe.Devices, Is.Empty);
        Assert.That(probe.DriverPath, Is.Null);
        Assert.That(probe.Summary, Is.EqualTo("CUDA unavailable: " + probe.Reason));
    }

    [Test]
    public void Probe_IsComputedOnce_AndIsTheSameFromEveryThread()
    {
        var results = new CudaAvailability[8];
        Parallel.For(0, results.Length, i => results[i] = CudaAvailability.Probe());
        Assert.That(results, Is.All.SameAs(CudaAvailability.Probe()));
    }

    [Test]
    public void Probe_LogsAtMostOnce()
    {
        var lines = new List<string>();
        CudaAvailability.Probe(lines.Add);
        CudaAvailability.Probe(lines.Add);
        // Another test may already have logged the line for this process; never more than once.
        Assert.That(lines.Count, Is.LessThanOrEqualTo(1));
        if (lines.Count == 1) Assert.That(lines[0], Is.EqualTo(CudaAvailability.Probe().Summary));
    }

    [Test]
    public void LibrariesOtherThanTheDriver_FailToBindCleanly_WhenAbsent()
    {
        var outcome = NativeLibraryResolver.Load(NativeLibraryResolver.Nvrtc);
        if (outcome.Handle != 0) Assert.Ignore($"NVRTC is installed here ({outcome.LoadedFrom})");
        Assert.That(outcome.Failure, Does.StartWith("libnvrtc.so.13 is not in"));
        // The bindings throw the runtime's DllNotFoundException (caught by the probe and by Describe), never crash.
        Assert.Throws<DllNotFoundException>(() => Nvrtc.nvrtcVersion(out _, out _));
    }
}
