using NUnit.Framework;
using Phi2Native.Cuda;

namespace Phi2Native.Tests.Cuda;

/// <summary>The resolver's probing order, as a pure function of the environment: no CUDA needed.</summary>
[TestFixture]
public class NativeLibraryResolverTests
{
    [Test]
    public void SearchDirectories_PutsCudaPathFirst_ThenDefault_ThenVersionsNewestFirst_ThenNvidia()
    {
        var dirs = NativeLibraryResolver.SearchDirectories("/opt/cuda/",
            ["bin", "cuda-12.4", "cuda", "cuda-13.0", "cuda-12", "cuda-samples", "cuda-12.10", "nvidia"]);
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
    public void SearchDirectories_WithoutCudaPathOrToolkits_IsTheNvidiaMountOnly()
    {
        Assert.That(NativeLibraryResolver.SearchDirectories(null, []), Is.EqualTo(new[] { "/usr/local/nvidia/lib64" }));
        Assert.That(NativeLibraryResolver.SearchDirectories("  ", ["bin"]), Is.EqualTo(new[] { "/usr/local/nvidia/lib64" }));
    }

    [Test]
    public void SearchDirectories_DropsACudaPathThatIsTheDefaultInstall()
    {
        var dirs = NativeLibraryResolver.SearchDirectories("/usr/local/cuda", ["cuda"]);
        Assert.That(dirs, Is.EqualTo(new[] { "/usr/local/cuda/lib64", "/usr/local/nvidia/lib64" }));
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
        var env = new ProbeEnvironment(null, "/x/lib", ["/usr/local/cuda/lib64", "/usr/local/nvidia/lib64"], _ => []);
        string message = NativeLibraryResolver.NotFoundMessage("cuda", env);
        Assert.That(message, Is.EqualTo(
            "libcuda.so.1 is not in the loader's paths (LD_LIBRARY_PATH=/x/lib, the ld.so cache), /usr/local/cuda/lib64, /usr/local/nvidia/lib64 (also tried libcuda.so)"));
    }
}
