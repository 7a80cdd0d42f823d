using NUnit.Framework;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Gpu;
using Phi2Native.Cuda.Native;

namespace Phi2Native.Tests.Cuda;

/// <summary>
/// NVRTC needs no GPU: where libnvrtc is installed (the CUDA toolkit, or its NVRTC package alone), every embedded
/// kernel file is compiled for sm_90 through the real compiler and cache, so a kernel that g++ (the emulator)
/// accepts but NVRTC refuses fails before any GPU time is spent. Ignored, with the resolver's reason, without NVRTC,
/// unless <c>PHI2NATIVE_REQUIRE_NVRTC=1</c> (set by .ci/run once .ci/cuda-tools.sh has unpacked NVRTC): then a missing
/// NVRTC fails, so CI cannot pass with these tests silently skipped.
/// </summary>
[TestFixture, Category("Nvrtc"), NonParallelizable]
public class NvrtcCompileTests : Support.TemporaryDirectoryTest
{
    private const string Architecture = "sm_90"; // the reference device (H200); a cubin needs no device to be built

    [OneTimeSetUp]
    public void FindNvrtc()
    {
        var nvrtc = NativeLibraryResolver.Load(NativeLibraryResolver.Nvrtc);
        if (nvrtc.Handle == 0)
        {
            if (Environment.GetEnvironmentVariable("PHI2NATIVE_REQUIRE_NVRTC") == "1") Assert.Fail($"PHI2NATIVE_REQUIRE_NVRTC=1, but NVRTC did not load: {nvrtc.Failure}");
            Assert.Ignore($"needs NVRTC: {nvrtc.Failure}");
        }
        TestContext.Progress.WriteLine($"{new NvrtcKernelCompiler().Version} from {nvrtc.LoadedFrom}");
    }

    [TestCase("sm_90")]
    [TestCase("sm_80")]
    public void EveryEmbeddedKernelFileCompilesToACubin(string architecture)
    {
        var cache = new KernelCache(KernelSourceCatalog.Embedded, new NvrtcKernelCompiler(), architecture, KernelCacheOptions.Disabled);
        foreach (string file in KernelSourceCatalog.Embedded.Files)
        {
            var image = cache.GetImage(file);
            TestContext.Progress.WriteLine($"{file}: {image.Image.Length} bytes in {image.Seconds:F2} s{(image.Log.Length > 0 ? "\n" + image.Log : "")}");
            byte[] elf = [0x7f, (byte)'E', (byte)'L', (byte)'F'];
            Assert.That(image.Image.Take(4), Is.EqualTo(elf), $"{file}: a cubin is an ELF image");
        }
    }

    [Test]
    public void ABrokenSourceFailsWithNvrtcsLog()
    {
        const string broken = "#include \"common.cuh\"\nPHI2_KERNEL void broken(float* y) { y[0] = undeclared_thing; }\n";
        var e = Assert.Throws<KernelCompileException>(() => new NvrtcKernelCompiler().Compile("broken.cu", broken,
            KernelSourceCatalog.Embedded.Headers, KernelCache.CompileOptions(Architecture)))!;
        Assert.That(e.Log, Does.Contain("undeclared_thing").And.Contain("broken.cu"));
        Assert.That(e.Message, Does.Contain("NVRTC_ERROR_COMPILATION").And.Contain("--gpu-architecture=sm_90"));
    }

    [Test]
    public void AHeaderIsFoundByNameOnlyNeverInTheWorkingFolder()
    {
        // Without the headers list, common.cuh must not be found, even with one in the current folder.
        string previous = Environment.CurrentDirectory;
        File.WriteAllText(Path.Combine(Temp, "common.cuh"), "#pragma once\n");
        try
        {
            Environment.CurrentDirectory = Temp;
            var e = Assert.Throws<KernelCompileException>(() => new NvrtcKernelCompiler().Compile("elementwise.cu",
                KernelSourceCatalog.Embedded.SourceOf("elementwise.cu"), [], KernelCache.CompileOptions(Architecture)))!;
            Assert.That(e.Log, Does.Contain("common.cuh"));
        }
        finally
        {
            Environment.CurrentDirectory = previous;
        }
    }

    [Test]
    public void TheRealCompilerFillsTheDiskCacheAndASecondCacheReadsIt()
    {
        var options = KernelCacheOptions.InDirectory(Path.Combine(Temp, "kernels")) with { Warning = w => Assert.Fail(w) };
        var first = new KernelCache(KernelSourceCatalog.Embedded, new NvrtcKernelCompiler(), Architecture, options).GetImage("elementwise.cu");
        var second = new KernelCache(KernelSourceCatalog.Embedded, new NvrtcKernelCompiler(), Architecture, options).GetImage("elementwise.cu");
        Assert.That(first.Origin, Is.EqualTo(KernelImageOrigin.Compiled));
        Assert.That(second.Origin, Is.EqualTo(KernelImageOrigin.DiskCache));
        Assert.That(second.Image, Is.EqualTo(first.Image));
    }
}
