using System.Runtime.InteropServices;
using NUnit.Framework;
using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Emulator;
using Phi2Native.Tensors;

namespace Phi2Native.Tests.Cuda;

/// <summary>
/// Kernels edited without rebuilding, on the emulated device: g++ builds an emulator from a folder's edited kernel file
/// and the embedded others at run time (about 15 s each), the edit shows through the backend's normal launch path while
/// the build's emulator keeps the original in the same process, the library is cached by its sources, a new entry point
/// without a row in the emulator's table is warned about, and a compile error names the folder's file and line.
/// </summary>
[TestFixture, Category("Emulated")]
public class EditedKernelEmulatorTests : Support.TemporaryDirectoryTest
{
    private const string ScaleLine = "if (i < n) store<D>(y, i, alpha * load<D>(x, i));";

    private string Sources => Path.Combine(Temp, "kernels");
    private string CacheFolder => Path.Combine(Temp, "cache");

    private readonly List<string> _notices = [];

    private KernelSourceOptions Options => new() { Directory = Sources, Setting = "PHI2NATIVE_KERNEL_SOURCES", Notice = _notices.Add };
    private KernelCacheOptions Cache => KernelCacheOptions.InDirectory(CacheFolder) with { Warning = w => Assert.Fail($"unexpected cache warning: {w}") };

    // elementwise.cu with the scale kernels' one line replaced, and text appended.
    private void EditScale(string replacement, string appended = "")
    {
        string original = KernelSourceCatalog.Embedded.SourceOf("elementwise.cu");
        Assert.That(original, Does.Contain(ScaleLine), "the line this test edits");
        Directory.CreateDirectory(Sources);
        File.WriteAllText(Path.Combine(Sources, "elementwise.cu"), original.Replace(ScaleLine, replacement, StringComparison.Ordinal) + appended);
    }

    private static float[] Scaled(CudaBackend backend, float[] values, double factor)
    {
        using var x = backend.FromBytes(MemoryMarshal.AsBytes(values.AsSpan()), DType.F32, [values.Length], DType.F32);
        backend.ScaleInPlace(x, factor);
        return x.ToArray<float>();
    }

    [Test]
    public void AnEditedKernel_RunsThroughTheBackend_BuiltOnceAndCachedBySource()
    {
        EditScale("if (i < n) store<D>(y, i, 2.0f * alpha * load<D>(x, i)); // edited: twice the factor",
                  "PHI2_KERNEL void scale_new_f32(const float* x, float* y, float alpha, int n) { scale<dtype_f32>(x, y, alpha, n); }\n");
        float[] values = [.. Enumerable.Range(0, 1000).Select(i => (i - 500) * 0.25f)];
        float[] twice = [.. values.Select(v => 2.0f * 3.0f * v)];

        using (var edited = CudaBackend.OpenEmulated(Options, Cache))
        {
            Assert.That(edited.DeviceApi.Name, Is.EqualTo($"emulated (libphi2emu, kernels from {Sources})"));
            Assert.That(Scaled(edited, values, 3.0), Is.EqualTo(twice), "the edited scale_f32 ran");
        }
        Assert.That(_notices, Has.Count.EqualTo(2));
        Assert.That(_notices[1], Is.EqualTo("warning: kernel scale_new_f32 (elementwise.cu) has no row in the emulator's table " +
                                            "(kernels/emu/kernels.cpp, written by hand): launching it on the emulated device fails"));
        Assert.That(_notices[0], Does.StartWith(
            $"kernel sources from {Sources} (PHI2NATIVE_KERNEL_SOURCES): elementwise.cu (edited); " +
            $"the other {KernelSourceCatalog.Embedded.Files.Count + KernelSourceCatalog.Embedded.Headers.Count - 1} files are the embedded ones; " +
            "g++ built an emulator from them in"));
        var library = Directory.GetFiles(Path.Combine(CacheFolder, "emulator"), "libphi2emu.so", SearchOption.AllDirectories);
        Assert.That(library, Has.Length.EqualTo(1), "one library, renamed into place under its key");
        Assert.That(Directory.GetDirectories(Path.Combine(CacheFolder, "emulator")), Has.None.EndsWith(".tmp"), "no build folder left behind");

        // The build's emulator runs the embedded kernel beside it, in the same process.
        using (var original = new CudaBackend(new EmulatedDevice()))
            Assert.That(Scaled(original, values, 3.0), Is.EqualTo(values.Select(v => 3.0f * v).ToArray()));

        // Opened again: the process has it. A new builder (as in a new process) finds it in the cache and builds nothing.
        using (var again = CudaBackend.OpenEmulated(Options, Cache)) Assert.That(Scaled(again, values, 3.0), Is.EqualTo(twice));
        Assert.That(_notices[2], Does.EndWith($"the emulator built from them is loaded already ({library[0]})"));
        var sources = KernelSourceOverride.Load(Options)!;
        var fromDisk = new EmulatorBuilder("g++").Build(sources, Cache);
        Assert.That(fromDisk.Path, Is.EqualTo(library[0]));
        Assert.That(_notices[4], Does.EndWith($"the emulator built from them earlier is in the cache: {library[0]}"));
    }

    [Test]
    public void AnEditThatDoesNotCompile_NamesTheFoldersFileAndLine_AndLeavesNothingInTheCache()
    {
        EditScale("if (i < n) store<D>(y, i, alpha * load<D>(x, i)) + undefined_name; // broken");
        string path = Path.Combine(Sources, "elementwise.cu");
        int line = File.ReadAllLines(path).ToList().FindIndex(l => l.Contains("undefined_name", StringComparison.Ordinal)) + 1;

        var e = Assert.Throws<KernelCompileException>(() => EmulatedDevice.Open(Options, Cache))!;
        Assert.That(e.Compiler, Is.EqualTo("g++"));
        Assert.That(e.FileName, Is.EqualTo(path));
        Assert.That(e.Message, Does.StartWith($"g++ could not compile {path} (exit code 1) with -std=c++17"));
        Assert.That(e.Log, Does.Contain($"{path}:{line}:"), "the first error's file and line, in the folder");
        Assert.That(e.Log, Does.Contain("undefined_name"));
        Assert.That(Directory.Exists(Path.Combine(CacheFolder, "emulator")) ? Directory.GetFileSystemEntries(Path.Combine(CacheFolder, "emulator")) : [],
            Is.Empty, "the failed build folder is removed");
    }
}
