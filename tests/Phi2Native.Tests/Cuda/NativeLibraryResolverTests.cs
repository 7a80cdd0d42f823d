using NUnit.Framework;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Native;

namespace Phi2Native.Tests.Cuda;

/// <summary>The resolver's probing order, as a pure function of the environment: no CUDA needed.</summary>
[TestFixture]
public class NativeLibraryResolverTests
{
    // A fake file system: every folder of the tree, by full path; a folder's subfolders are the paths one level below.
    private static Func<string, IEnumerable<string>> Tree(params string[] folders) => parent =>
        folders.Where(f => f.StartsWith(parent.TrimEnd('/') + "/", StringComparison.Ordinal))
               .Select(f => f[(parent.TrimEnd('/').Length + 1)..].Split('/')[0])
               .Distinct();

    private static IReadOnlyList<string> Search(string? cudaPath = null, string? cudaHome = null, string? virtualEnv = null, params string[] folders) =>
        NativeLibraryResolver.SearchDirectories(new SearchVariables(cudaPath, cudaHome, virtualEnv), Tree(folders));

    [Test]
    public void SearchDirectories_PutsCudaPathFirst_ThenDefault_ThenVersionsNewestFirst_ThenNvidia()
    {
        var dirs = Search("/opt/cuda/", null, null,
            "/usr/local/bin", "/usr/local/cuda-12.4", "/usr/local/cuda", "/usr/local/cuda-13.0", "/usr/local/cuda-12", "/usr/local/cuda-samples",
            "/usr/local/cuda-12.10", "/usr/local/nvidia");
        Assert.That(dirs, Is.EqualTo(new[]
        {
            "/opt/cuda/lib64",
            "/usr/local/cuda/lib64",
            "/usr/local/cuda-13.0/lib64",
            "/usr/local/cuda-12.10/lib64", // 12.10 is newer than 12.4: compared as versions, not text
            "/usr/local/cuda-12.4/lib64",
            "/usr/local/cuda-12/lib64",
            "/usr/local/nvidia/lib64",
        }));
    }

    [Test]
    public void SearchDirectories_WithoutVariablesToolkitsOrVenvs_IsTheNvidiaMountOnly()
    {
        Assert.That(Search(), Is.EqualTo(new[] { "/usr/local/nvidia/lib64" }));
        Assert.That(Search("  ", "", " ", "/usr/local/bin", "/opt/empty"), Is.EqualTo(new[] { "/usr/local/nvidia/lib64" }));
    }

    [Test]
    public void SearchDirectories_DropsACudaPathThatIsTheDefaultInstall()
    {
        Assert.That(Search("/usr/local/cuda", null, null, "/usr/local/cuda"), Is.EqualTo(new[] { "/usr/local/cuda/lib64", "/usr/local/nvidia/lib64" }));
        Assert.That(Search("/usr/local/cuda", "/usr/local/cuda/", null), Is.EqualTo(new[] { "/usr/local/cuda/lib64", "/usr/local/nvidia/lib64" }));
    }

    [Test]
    public void SearchDirectories_ProbeCudaHome_TheActiveVenvsWheels_AndEveryOptVenvs_InTheirPlaces()
    {
        const string active = "/home/u/env/lib/python3.11/site-packages/nvidia";
        const string torch = "/opt/torch/.venv/lib/python3.12/site-packages/nvidia";
        var dirs = Search("/cp", "/ch", "/home/u/env/",
            active + "/cuda_nvrtc", active + "/cublas", active + "/cudnn",
            "/usr/local/cuda-13.0",
            // Wheel folders in the documented order, whatever the listing's order; a Python 3.9 beside 3.12 comes after it.
            torch + "/cublas", torch + "/cu13", torch + "/nccl", torch + "/cu12",
            "/opt/torch/.venv/lib/python3.9/site-packages/nvidia/cu12",
            "/opt/aaa/.venv/lib/python3.10/site-packages/nvidia/cu13",
            "/opt/novenv/lib/python3.12/site-packages/nvidia/cu13",           // not a .venv: not probed
            "/opt/torch/.venv/lib/python3.12/site-packages/torch");
        Assert.That(dirs, Is.EqualTo(new[]
        {
            "/cp/lib64",
            "/ch/lib64",
            active + "/cuda_nvrtc/lib",
            active + "/cublas/lib",
            "/usr/local/cuda-13.0/lib64",
            "/opt/aaa/.venv/lib/python3.10/site-packages/nvidia/cu13/lib",
            torch + "/cu13/lib",
            torch + "/cu12/lib",
            torch + "/cublas/lib",
            "/opt/torch/.venv/lib/python3.9/site-packages/nvidia/cu12/lib",
            "/usr/local/nvidia/lib64",
        }));
    }

    [Test]
    public void SearchDirectories_AVenvIsProbedOnce_WhenVirtualEnvIsAnOptVenv()
    {
        const string torch = "/opt/torch/.venv/lib/python3.12/site-packages/nvidia";
        Assert.That(Search(null, null, "/opt/torch/.venv", torch + "/cu13"),
            Is.EqualTo(new[] { torch + "/cu13/lib", "/usr/local/nvidia/lib64" }));
    }

    [Test]
    public void Candidates_TryEachSonameNewestFirst_LoaderBeforeFolders_UnversionedLast()
    {
        string[] dirs = ["/a/lib64", "/b/lib64"];
        Assert.That(NativeLibraryResolver.Candidates("nvrtc", dirs), Is.EqualTo(new[]
        {
            "libnvrtc.so.13", "/a/lib64/libnvrtc.so.13", "/b/lib64/libnvrtc.so.13",
            "libnvrtc.so.12", "/a/lib64/libnvrtc.so.12", "/b/lib64/libnvrtc.so.12",
            "libnvrtc.so", "/a/lib64/libnvrtc.so", "/b/lib64/libnvrtc.so",
        }));
        Assert.That(NativeLibraryResolver.Candidates("cuda", dirs).Take(3), Is.EqualTo(new[] { "libcuda.so.1", "/a/lib64/libcuda.so.1", "/b/lib64/libcuda.so.1" }));
        Assert.That(NativeLibraryResolver.Candidates("cublas", []), Is.EqualTo(new[] { "libcublas.so.13", "libcublas.so.12", "libcublas.so" }));
        Assert.That(NativeLibraryResolver.Candidates("cublasLt", []), Is.EqualTo(new[] { "libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so" }));
    }

    [Test]
    public void Candidates_UnknownName_Throws()
    {
        Assert.That(() => NativeLibraryResolver.Candidates("cudnn", []), Throws.ArgumentException.With.Message.Contains("cudnn"));
    }

    [Test]
    public void BuiltinsCandidates_MatchTheMajorVersion_SonameFirst()
    {
        string[] files =
        [
            "libnvrtc.so.13", "libnvrtc-builtins.so", "libnvrtc-builtins.so.13.0.88", "libnvrtc-builtins.so.13.0",
            "libnvrtc-builtins.so.12.9", "libnvrtc-builtins.so.130.1", "libnvrtc-builtins_static.a",
        ];
        Assert.That(NativeLibraryResolver.BuiltinsCandidates("/usr/local/cuda/lib64/", "libnvrtc.so.13", files), Is.EqualTo(new[]
        {
            "/usr/local/cuda/lib64/libnvrtc-builtins.so.13.0",
            "/usr/local/cuda/lib64/libnvrtc-builtins.so.13.0.88",
        }));
        Assert.That(NativeLibraryResolver.BuiltinsCandidates("/d", "libnvrtc.so.12", files), Is.EqualTo(new[] { "/d/libnvrtc-builtins.so.12.9" }));
        Assert.That(NativeLibraryResolver.BuiltinsCandidates("/d", "libnvrtc.so", files), Does.Contain("/d/libnvrtc-builtins.so.12.9").And.Contain("/d/libnvrtc-builtins.so.13.0"));
    }

    [Test]
    public void NotFoundMessage_NamesTheSonameAndEveryPlaceLooked()
    {
        var env = new ProbeEnvironment("/x/lib", ["/usr/local/cuda/lib64", "/usr/local/nvidia/lib64"], _ => []);
        string message = NativeLibraryResolver.NotFoundMessage("cuda", env);
        Assert.That(message, Is.EqualTo(
            "libcuda.so.1 is not in the loader's paths (LD_LIBRARY_PATH=/x/lib, the ld.so cache), /usr/local/cuda/lib64, /usr/local/nvidia/lib64 (also tried libcuda.so)"));
    }

    [Test]
    public void BlasPairCandidates_TakeBothFromOneFolder_NewestMajorFirst_LoaderFirstWithinIt()
    {
        var files = new Dictionary<string, string[]>
        {
            ["/venv/cu13/lib"] = ["libcublas.so.13", "libnvrtc.so.13"],                  // cuBLASLt missing: not used
            ["/usr/local/cuda/lib64"] = ["libcublasLt.so.13", "libcublas.so.13", "libcublas.so.12"],
            ["/old/lib64"] = ["libcublas.so.12", "libcublasLt.so.12", "libcublas.so", "libcublasLt.so"],
            ["/lt-only"] = ["libcublasLt.so.12"],
        };
        string[] dirs = ["/venv/cu13/lib", "/usr/local/cuda/lib64", "/old/lib64", "/lt-only"];
        var (pairs, lone) = NativeLibraryResolver.BlasPairCandidates(dirs, d => files.TryGetValue(d, out var f) ? f : []);
        Assert.That(pairs, Is.EqualTo(new[]
        {
            new BlasPairCandidate(null, "libcublas.so.13", "libcublasLt.so.13"),
            new BlasPairCandidate("/usr/local/cuda/lib64", "libcublas.so.13", "libcublasLt.so.13"),
            new BlasPairCandidate(null, "libcublas.so.12", "libcublasLt.so.12"),
            new BlasPairCandidate("/old/lib64", "libcublas.so.12", "libcublasLt.so.12"),
            new BlasPairCandidate(null, "libcublas.so", "libcublasLt.so"),
            new BlasPairCandidate("/old/lib64", "libcublas.so", "libcublasLt.so"),
        }));
        Assert.That(lone, Is.EqualTo(new[]
        {
            "/venv/cu13/lib has libcublas.so.13 but no libcublasLt.so.13",
            "/usr/local/cuda/lib64 has libcublas.so.12 but no libcublasLt.so.12",
            "/lt-only has libcublasLt.so.12 but no libcublas.so.12",
        }));
    }

    [Test]
    public void BlasNotFoundMessage_NamesBothFiles_EveryPlace_AndTheLoneFolders()
    {
        var env = new ProbeEnvironment(null, ["/venv/cu13/lib"], _ => []);
        string message = NativeLibraryResolver.BlasNotFoundMessage(env, ["/venv/cu13/lib has libcublas.so.13 but no libcublasLt.so.13"]);
        Assert.That(message, Is.EqualTo(
            "no one folder holds both libcublas.so.13 and libcublasLt.so.13 (nor libcublas.so.12 and libcublasLt.so.12, nor libcublas.so and libcublasLt.so) " +
            "in the loader's paths (LD_LIBRARY_PATH=(unset), the ld.so cache), /venv/cu13/lib; cuBLAS and cuBLASLt are taken from one folder, " +
            "since a mismatched pair fails on missing symbols; /venv/cu13/lib has libcublas.so.13 but no libcublasLt.so.13"));
    }

    [Test]
    public void Blas_OnThisMachine_BothComeFromOneFolder_OrNeitherLoads()
    {
        var blas = NativeLibraryResolver.Load(NativeLibraryResolver.Cublas);
        var lt = NativeLibraryResolver.Load(NativeLibraryResolver.CublasLt);
        if (blas.Handle == 0)
        {
            Assert.That(lt.Handle, Is.EqualTo((nint)0));
            Assert.That(blas.Failure, Does.StartWith("no one folder holds both libcublas.so.13 and libcublasLt.so.13"));
            Assert.That(lt.Failure, Is.EqualTo(blas.Failure));
        }
        else
        {
            Assert.That(lt.Handle, Is.Not.EqualTo((nint)0));
            Assert.That(Path.GetDirectoryName(blas.LoadedFrom), Is.EqualTo(Path.GetDirectoryName(lt.LoadedFrom)));
        }
    }

    [Test]
    public void FileContaining_FindsTheMappingThatHoldsTheAddress()
    {
        string[] maps =
        [
            "55d0c0000000-55d0c0021000 r--p 00000000 08:01 100 /usr/bin/dotnet",
            "7f00aa000000-7f00aa100000 r-xp 00010000 08:01 200    /opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib/libnvrtc.so.13",
            "7f00ab000000-7f00ab001000 rw-p 00000000 00:00 0 ",
            "7f00ac000000-7f00ac001000 r-xp 00000000 00:00 0 [vdso]",
            "7f00ad000000-7f00ad001000 r-xp 00000000 08:01 300 /a dir/with spaces/libcuda.so.580.65.06",
        ];
        Assert.That(MappedFiles.FileContaining(maps, 0x7f00aa000010),
            Is.EqualTo("/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib/libnvrtc.so.13"));
        Assert.That(MappedFiles.FileContaining(maps, 0x7f00ad000fff), Is.EqualTo("/a dir/with spaces/libcuda.so.580.65.06"));
        Assert.That(MappedFiles.FileContaining(maps, 0x7f00aa100000), Is.Null, "the end is exclusive");
        Assert.That(MappedFiles.FileContaining(maps, 0x7f00ab000000), Is.Null, "anonymous memory");
        Assert.That(MappedFiles.FileContaining(maps, 0x7f00ac000000), Is.Null, "[vdso] is no file");
    }

    [Test]
    public void FileOf_FindsTheFileOfALibraryLoadedHere()
    {
        // The emulator is loaded by path; its mapping must be found again from one of its exports.
        var emulator = NativeLibraryResolver.Load(NativeLibraryResolver.Emulator);
        if (emulator.Handle == 0) Assert.Ignore($"the emulator does not load here: {emulator.Failure}");
        Assert.That(MappedFiles.FileOf(emulator.Handle, "emu_launch"), Is.EqualTo(Path.GetFullPath(emulator.LoadedFrom!)));
        Assert.That(MappedFiles.FileOf(emulator.Handle, "no_such_export"), Is.Null);
    }
}
