using NUnit.Framework;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Native;

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

    [Test]
    public void ChooseElapsedTimeExport_PrefersV2_FallsBackToThePlainName_ElseNone()
    {
        string? Choose(params string[] exports) => CudaDriver.ChooseElapsedTimeExport(exports.Contains);
        Assert.That(Choose("cuEventElapsedTime", "cuEventElapsedTime_v2"), Is.EqualTo("cuEventElapsedTime_v2"));
        Assert.That(Choose("cuEventElapsedTime_v2"), Is.EqualTo("cuEventElapsedTime_v2"), "CUDA 13's header declares only _v2");
        Assert.That(Choose("cuEventElapsedTime"), Is.EqualTo("cuEventElapsedTime"), "a driver older than CUDA 12.8");
        Assert.That(Choose("cuEventElapsedTime_v3", "cuInit"), Is.Null);
    }

    [Test]
    public void LibraryReport_SaysEachFileChosenOrWhyNone_AndTheElapsedTimeExports()
    {
        const string places = "the loader's paths (LD_LIBRARY_PATH=(unset), the ld.so cache), /venv/cu13/lib";
        var found = new NativeLibraryResolver.LoadOutcome(1, "/usr/lib/x86_64-linux-gnu/libcuda.so.580.65.06", null)
            { FoundBy = "the loader's paths, as libcuda.so.1" };
        var nvrtc = new NativeLibraryResolver.LoadOutcome(2, "/venv/cu13/lib/libnvrtc.so.13", null) { Builtins = "/venv/cu13/lib/libnvrtc-builtins.so.13.0" };
        var missing = new NativeLibraryResolver.LoadOutcome(0, null, $"no one folder holds both libcublas.so.13 and libcublasLt.so.13 in {places}; /venv/cu13/lib has libcublas.so.13 but no libcublasLt.so.13");
        string report = CudaLibraryReport.Format(places,
            [new("libcuda", found), new("NVRTC", nvrtc, "NVRTC 13.0"), new("cuBLAS", missing), new("cuBLASLt", missing)], (V2: true, V1: false));
        Assert.That(report.Split('\n'), Is.EqualTo(new[]
        {
            $"CUDA libraries (searched, in order: {places}):",
            "  libcuda:  /usr/lib/x86_64-linux-gnu/libcuda.so.580.65.06 (through the loader's paths, as libcuda.so.1)",
            "  NVRTC:    /venv/cu13/lib/libnvrtc.so.13 (NVRTC 13.0)",
            "  builtins: /venv/cu13/lib/libnvrtc-builtins.so.13.0",
            "  cuBLAS:   not found: no one folder holds both libcublas.so.13 and libcublasLt.so.13 in the places above; /venv/cu13/lib has libcublas.so.13 but no libcublasLt.so.13",
            "  cuBLASLt: not found: no one folder holds both libcublas.so.13 and libcublasLt.so.13 in the places above; /venv/cu13/lib has libcublas.so.13 but no libcublasLt.so.13",
            "  libcuda exports cuEventElapsedTime_v2: yes, cuEventElapsedTime: no; event timing binds cuEventElapsedTime_v2",
        }));
    }

    [Test]
    public void DescribeLibraries_OnThisMachine_HasALineForEveryLibrary_AndNeverThrows()
    {
        string report = CudaAvailability.DescribeLibraries();
        TestContext.Progress.WriteLine(report);
        Assert.That(report, Does.StartWith("CUDA libraries (searched, in order: the loader's paths"));
        foreach (string label in new[] { "libcuda:", "NVRTC:", "cuBLAS:", "cuBLASLt:" })
            Assert.That(report, Does.Contain("\n  " + label), label);
        var driver = NativeLibraryResolver.Load(NativeLibraryResolver.Cuda);
        if (driver.Handle == 0)
        {
            Assert.That(report, Does.Contain("  libcuda:  not found: libcuda.so.1 is not in the places above"));
            Assert.That(report, Does.Not.Contain("exports"), "no driver, so nothing to say about its exports");
        }
        else Assert.That(report, Does.Contain("libcuda exports cuEventElapsedTime_v2: "));
    }
}
