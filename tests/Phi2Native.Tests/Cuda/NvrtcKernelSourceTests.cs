using NUnit.Framework;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Gpu;
using Phi2Native.Cuda.Native;

namespace Phi2Native.Tests.Cuda;

/// <summary>
/// A folder of edited kernel sources through the real NVRTC (no GPU needed): an edited file and a new one compile, under
/// keys of their own, and an error names the folder's file and line. Ignored, with the resolver's reason, without NVRTC.
/// </summary>
[TestFixture, Category("Nvrtc"), NonParallelizable]
public class NvrtcKernelSourceTests : Support.TemporaryDirectoryTest
{
    private const string Architecture = "sm_90";

    [OneTimeSetUp]
    public void FindNvrtc()
    {
        var nvrtc = NativeLibraryResolver.Load(NativeLibraryResolver.Nvrtc);
        if (nvrtc.Handle == 0) Assert.Ignore($"needs NVRTC: {nvrtc.Failure}");
    }

    private KernelCache CacheOver(params (string Name, string Text)[] files)
    {
        foreach (var (name, text) in files) File.WriteAllText(Path.Combine(Temp, name), text);
        var sources = KernelSourceOverride.Load(new KernelSourceOptions { Directory = Temp, Setting = "PHI2NATIVE_KERNEL_SOURCES" })!;
        return new KernelCache(sources.Catalog, new NvrtcKernelCompiler(), Architecture, KernelCacheOptions.Disabled);
    }

    [Test]
    public void AnEditedAndANewFileCompile_UnderKeysOfTheirOwn()
    {
        string edited = KernelSourceCatalog.Embedded.SourceOf("elementwise.cu").Replace("alpha * load<D>(x, i)", "2.0f * alpha * load<D>(x, i)", StringComparison.Ordinal);
        var cache = CacheOver(("elementwise.cu", edited),
            ("extra.cu", "#include \"common.cuh\"\nPHI2_KERNEL void extra_f32(float* y, int n) { if ((int)threadIdx.x < n) y[threadIdx.x] = 1.0f; }\n"));
        var embedded = new KernelCache(KernelSourceCatalog.Embedded, new NvrtcKernelCompiler(), Architecture, KernelCacheOptions.Disabled);
        var image = cache.GetImage("elementwise.cu");
        Assert.That(image.Key, Is.Not.EqualTo(embedded.KeyOf("elementwise.cu")));
        Assert.That(image.Image, Is.Not.EqualTo(embedded.GetImage("elementwise.cu").Image), "the edit reached the cubin");
        Assert.That(cache.Catalog.FileOf("extra_f32"), Is.EqualTo("extra.cu"));
        Assert.That(cache.GetImage("extra.cu").Image.Take(4), Is.EqualTo(new byte[] { 0x7f, (byte)'E', (byte)'L', (byte)'F' }));
    }

    [Test]
    public void AnErrorNamesTheFoldersFileAndLine()
    {
        string source = KernelSourceCatalog.Embedded.SourceOf("elementwise.cu").Replace(
            "if (i < n) store<D>(y, i, alpha * load<D>(x, i));", "if (i < n) store<D>(y, i, alpha * undeclared_thing);", StringComparison.Ordinal);
        int line = source.Split('\n').ToList().FindIndex(l => l.Contains("undeclared_thing", StringComparison.Ordinal)) + 1;
        Assert.That(line, Is.Positive, "the edit took");
        var cache = CacheOver(("elementwise.cu", source));
        var e = Assert.Throws<KernelCompileException>(() => cache.GetImage("elementwise.cu"))!;
        string path = Path.Combine(Temp, "elementwise.cu");
        Assert.That(e.FileName, Is.EqualTo(path));
        Assert.That(e.Message, Does.StartWith($"NVRTC could not compile {path} (NVRTC_ERROR_COMPILATION)"));
        Assert.That(e.Log, Does.Contain($"{path}({line}): error"));
    }
}
