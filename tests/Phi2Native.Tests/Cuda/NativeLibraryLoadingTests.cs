using System.Diagnostics;
using System.Runtime.InteropServices;
using NUnit.Framework;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Native;

namespace Phi2Native.Tests.Cuda;

/// <summary>
/// The resolver's loading over stand-in libraries that g++ builds here, named as NVIDIA's (libcublas.so.13 exporting
/// cublasCreate_v2, and so on), in folders laid out as pip wheels: which files it takes, and which it refuses. The
/// stand-ins are unloaded after each test, so no later test can mistake them for CUDA.
/// </summary>
[TestFixture]
public class NativeLibraryLoadingTests : Support.TemporaryDirectoryTest
{
    private readonly List<nint> _loaded = [];

    [TearDown]
    public void UnloadStandIns()
    {
        // Newest first: libcublas holds a reference to the libcublasLt it needs.
        for (int i = _loaded.Count - 1; i >= 0; i--) NativeLibrary.Free(_loaded[i]);
        _loaded.Clear();
    }

    // A shared library named `soname` in `folder` exporting `export`, linked against `needs` (a file in the same folder).
    private static void StandIn(string folder, string soname, string export, string? needs = null)
    {
        Directory.CreateDirectory(folder);
        string source = Path.Combine(folder, soname + ".c");
        File.WriteAllText(source, $"__attribute__((visibility(\"default\"))) int {export}(void) {{ return 0; }}\n");
        var arguments = new List<string> { "-x", "c", "-shared", "-fPIC", $"-Wl,-soname,{soname}", "-o", Path.Combine(folder, soname), source };
        if (needs is not null) arguments.AddRange(["-L", folder, $"-l:{needs}"]);
        var start = new ProcessStartInfo("g++") { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (string a in arguments) start.ArgumentList.Add(a);
        using var process = Process.Start(start)!;
        string errors = process.StandardError.ReadToEnd();
        process.WaitForExit();
        Assert.That(process.ExitCode, Is.Zero, errors);
        File.Delete(source);
    }

    private ProbeEnvironment Environment(params string[] directories) =>
        new(null, directories, d => Directory.Exists(d) ? Directory.EnumerateFiles(d).Select(Path.GetFileName).OfType<string>() : []);

    private NativeLibraryResolver.LoadOutcome Keep(NativeLibraryResolver.LoadOutcome outcome)
    {
        if (outcome.Handle != 0) _loaded.Add(outcome.Handle);
        return outcome;
    }

    [Test]
    public void CublasPair_ComesFromTheOneFolderHoldingBoth_NeverFromAFolderWithOnlyOne()
    {
        if (NativeLibraryResolver.Load(NativeLibraryResolver.Cublas).Handle != 0) Assert.Ignore("a real cuBLAS is loaded here; stand-ins would be shadowed by it");
        // A CUDA 12 wheel that lost its cuBLASLt, then a CUDA 13 wheel folder with both: the lone one is skipped, the pair taken.
        string lone = Path.Combine(Temp, "venv/lib/python3.12/site-packages/nvidia/cublas/lib");
        string pair = Path.Combine(Temp, "opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib");
        StandIn(lone, "libcublas.so.13", "cublasCreate_v2");
        StandIn(pair, "libcublasLt.so.13", "cublasLtCreate");
        StandIn(pair, "libcublas.so.13", "cublasCreate_v2", needs: "libcublasLt.so.13");

        var (blas, lt) = NativeLibraryResolver.LoadBlasPair(Environment(lone, pair));
        Keep(lt);
        Keep(blas);
        Assert.That(blas.Failure, Is.Null);
        Assert.That(blas.LoadedFrom, Is.EqualTo($"{pair}/libcublas.so.13"));
        Assert.That(lt.LoadedFrom, Is.EqualTo($"{pair}/libcublasLt.so.13"));
        Assert.That(NativeLibrary.TryGetExport(blas.Handle, "cublasCreate_v2", out _), Is.True);
        Assert.That(NativeLibrary.TryGetExport(lt.Handle, "cublasLtCreate", out _), Is.True);
        Assert.That(MappedFiles.FileOf(blas.Handle, "cublasCreate_v2"), Is.EqualTo($"{pair}/libcublas.so.13"));
    }

    [Test]
    public void CublasPair_WithOnlyLoneFolders_LoadsNeither_AndSaysWhichFolderLacksWhat()
    {
        if (NativeLibraryResolver.Load(NativeLibraryResolver.Cublas).Handle != 0) Assert.Ignore("a real cuBLAS is loaded here");
        string blasOnly = Path.Combine(Temp, "a"), ltOnly = Path.Combine(Temp, "b");
        StandIn(blasOnly, "libcublas.so.12", "cublasCreate_v2");
        StandIn(ltOnly, "libcublasLt.so.13", "cublasLtCreate");

        var (blas, lt) = NativeLibraryResolver.LoadBlasPair(Environment(blasOnly, ltOnly));
        Keep(blas);
        Keep(lt);
        Assert.That(blas.Handle, Is.EqualTo((nint)0));
        Assert.That(lt.Handle, Is.EqualTo((nint)0));
        Assert.That(blas.Failure, Does.StartWith("no one folder holds both libcublas.so.13 and libcublasLt.so.13"));
        Assert.That(blas.Failure, Does.Contain($"{blasOnly} has libcublas.so.12 but no libcublasLt.so.12"));
        Assert.That(blas.Failure, Does.Contain($"{ltOnly} has libcublasLt.so.13 but no libcublas.so.13"));
    }

    [Test]
    public void Nvrtc_FromAWheelFolder_PreloadsTheBuiltinsBesideIt_AndTheReportNamesBoth()
    {
        if (NativeLibraryResolver.Load(NativeLibraryResolver.Nvrtc).Handle != 0) Assert.Ignore("a real NVRTC is loaded here");
        string wheel = Path.Combine(Temp, "venv/lib/python3.12/site-packages/nvidia/cu13/lib");
        StandIn(wheel, "libnvrtc-builtins.so.13.0", "nvrtcBuiltinsStandIn");
        StandIn(wheel, "libnvrtc.so.13", "nvrtcVersion");

        var nvrtc = Keep(NativeLibraryResolver.LoadUncached(NativeLibraryResolver.Nvrtc, Environment(Path.Combine(Temp, "empty"), wheel)));
        Assert.That(nvrtc.LoadedFrom, Is.EqualTo($"{wheel}/libnvrtc.so.13"));
        Assert.That(nvrtc.FoundBy, Is.Null, "loaded by its full path");
        Assert.That(nvrtc.Builtins, Is.EqualTo($"{wheel}/libnvrtc-builtins.so.13.0"));
        // The resolver's preload holds one reference to the builtins and this TryLoad another: both go after the test.
        Assert.That(NativeLibrary.TryLoad(nvrtc.Builtins!, out nint builtins), Is.True, "the builtins were loaded");
        _loaded.InsertRange(0, [builtins, builtins]);
    }
}
