using System.Text;
using NUnit.Framework;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Gpu;

namespace Phi2Native.Tests.Cuda;

/// <summary>
/// <see cref="KernelCache"/> and <see cref="KernelDiskCache"/> with a fake compiler: a miss compiles and writes, a
/// hit reads; the key changes with every input; entries are written whole and validated on read, so a truncated or
/// corrupt one is recompiled, never loaded; a compile error carries the log; an unusable folder degrades to compiling
/// without the disk cache, with a warning.
/// </summary>
[TestFixture]
public class KernelCacheTests : Support.TemporaryDirectoryTest
{
    private sealed class FakeCompiler : IKernelCompiler
    {
        private int _compiles;
        public string Version { get; set; } = "FakeRTC 1.0";
        public int Compiles => Volatile.Read(ref _compiles);

        public KernelCompilation Compile(string fileName, string source, IReadOnlyList<KernelHeader> headers, IReadOnlyList<string> options)
        {
            Interlocked.Increment(ref _compiles);
            Thread.Sleep(5); // long enough for concurrent requests to overlap
            if (source.Contains("#error", StringComparison.Ordinal))
                throw new KernelCompileException(fileName, options, "NVRTC_ERROR_COMPILATION", $"{fileName}(2): error: #error directive: \"planted\"\n1 error detected");
            Assert.That(headers.Select(h => h.Name), Is.EqualTo(new[] { "common.cuh" }), "headers travel by name");
            return new KernelCompilation(Encoding.UTF8.GetBytes($"image of {fileName} for {string.Join(" ", options)}: {source}"), "");
        }
    }

    private static readonly KernelSourceCatalog Catalog = new(
        new Dictionary<string, string>
        {
            ["a.cu"] = "#include \"common.cuh\"\nPHI2_KERNEL void ka(int n) {}\n",
            ["b.cu"] = "#include \"common.cuh\"\nPHI2_KERNEL void kb(int n) {}\n",
            ["bad.cu"] = "#include \"common.cuh\"\n#error planted\nPHI2_KERNEL void kbad() {}\n",
        },
        [new KernelHeader("common.cuh", "#pragma once\n")]);

    private readonly List<string> _warnings = [];

    private string CacheDirectory => Path.Combine(Temp, "kernels");

    private KernelCache NewCache(FakeCompiler compiler, string? directory = "", string architecture = "sm_90") =>
        new(Catalog, compiler, architecture, new KernelCacheOptions
        {
            Directory = directory == "" ? CacheDirectory : directory,
            Warning = _warnings.Add,
        });

    [SetUp]
    public void ClearWarnings() => _warnings.Clear();

    [Test]
    public void AMissCompilesAndWritesThenMemoryThenDiskServeIt()
    {
        var compiler = new FakeCompiler();
        var cache = NewCache(compiler);
        var first = cache.GetImage("a.cu");
        Assert.That(first.Origin, Is.EqualTo(KernelImageOrigin.Compiled));
        Assert.That(cache.GetImage("a.cu").Origin, Is.EqualTo(KernelImageOrigin.Memory));
        Assert.That(compiler.Compiles, Is.EqualTo(1));

        var again = new FakeCompiler();
        var second = NewCache(again).GetImage("a.cu");
        Assert.That(second.Origin, Is.EqualTo(KernelImageOrigin.DiskCache), "a new process (cache) reads the disk");
        Assert.That(second.Image, Is.EqualTo(first.Image));
        Assert.That(second.Key, Is.EqualTo(first.Key));
        Assert.That(again.Compiles, Is.Zero);
        Assert.That(_warnings, Is.Empty);
    }

    [Test]
    public void TheKeyChangesWithEveryInput()
    {
        KernelHeader[] headers = [new("common.cuh", "#pragma once\n")];
        string[] options = ["--gpu-architecture=sm_90", "--std=c++17"];
        string Key(string file = "a.cu", string source = "src", KernelHeader[]? h = null, string[]? o = null, string arch = "sm_90", string version = "NVRTC 12.8") =>
            KernelCache.ComputeKey(file, source, h ?? headers, o ?? options, arch, version);

        string[] keys =
        [
            Key(),
            Key(file: "b.cu"),
            Key(source: "src "),
            Key(h: [new("common.cuh", "#pragma once\n// changed\n")]),
            Key(h: [new("other.cuh", "#pragma once\n")]),
            Key(h: [.. headers, new("extra.cuh", "")]),
            Key(o: [.. options, "--generate-line-info"]),
            Key(o: ["--gpu-architecture=sm_90", "--std=c++20"]),
            Key(arch: "sm_80"),
            Key(version: "NVRTC 13.0"),
            // Fields are length-prefixed: moving text across a boundary is a different key.
            Key(o: ["--gpu-architecture=sm_90--std=c++17"]),
            Key(file: "a.cusrc", source: ""),
        ];
        Assert.That(keys, Is.Unique);
        Assert.That(keys, Is.All.Matches<string>(k => k.Length == 64 && k.All(Uri.IsHexDigit)));
        Assert.That(Key(), Is.EqualTo(Key()), "stable for the same inputs");
    }

    [Test]
    public void ANewCompilerVersionOrArchitectureRecompiles()
    {
        NewCache(new FakeCompiler()).GetImage("a.cu");
        var newer = new FakeCompiler { Version = "FakeRTC 2.0" };
        Assert.That(NewCache(newer).GetImage("a.cu").Origin, Is.EqualTo(KernelImageOrigin.Compiled));
        Assert.That(NewCache(new FakeCompiler(), architecture: "sm_80").GetImage("a.cu").Origin, Is.EqualTo(KernelImageOrigin.Compiled));
        Assert.That(Directory.GetFiles(CacheDirectory, "*.cubin"), Has.Length.EqualTo(3));
    }

    [Test]
    public void EntriesAreWrittenWholeUnderTheirKeyWithNoTemporaryLeftBehind()
    {
        var cache = NewCache(new FakeCompiler());
        var image = cache.GetImage("a.cu");
        var files = Directory.GetFiles(CacheDirectory);
        Assert.That(files.Select(Path.GetFileName), Is.EqualTo(new[] { image.Key + ".cubin" }));
        byte[] entry = File.ReadAllBytes(files[0]);
        Assert.That(entry.AsSpan(0, 8).ToArray(), Is.EqualTo("PHI2KC01"u8.ToArray()));
        Assert.That(KernelDiskCache.Decode(image.Key, entry), Is.EqualTo(image.Image));
        Assert.That(entry, Has.Length.EqualTo(KernelDiskCache.HeaderBytes + image.Image.Length));
    }

    [Test]
    public void AStaleTemporaryFileOfACrashedWriterIsNeverRead()
    {
        string key = NewCache(new FakeCompiler(), directory: null).KeyOf("a.cu");
        Directory.CreateDirectory(CacheDirectory);
        string stale = Path.Combine(CacheDirectory, key + ".cubin.4242.0123456789abcdef.tmp");
        File.WriteAllBytes(stale, KernelDiskCache.Encode(key, "half an ima"u8.ToArray())[..50]);
        var compiler = new FakeCompiler();
        Assert.That(NewCache(compiler).GetImage("a.cu").Origin, Is.EqualTo(KernelImageOrigin.Compiled));
        Assert.That(NewCache(new FakeCompiler()).GetImage("a.cu").Origin, Is.EqualTo(KernelImageOrigin.DiskCache));
    }

    public enum Damage { Truncated, TruncatedHeader, Empty, FlippedImageByte, FlippedChecksum, WrongMagic, OtherKeysEntry, LongerThanItSays }

    [TestCase(Damage.Truncated)]
    [TestCase(Damage.TruncatedHeader)]
    [TestCase(Damage.Empty)]
    [TestCase(Damage.FlippedImageByte)]
    [TestCase(Damage.FlippedChecksum)]
    [TestCase(Damage.WrongMagic)]
    [TestCase(Damage.OtherKeysEntry)]
    [TestCase(Damage.LongerThanItSays)]
    public void ADamagedEntryIsRecompiledAndRewrittenNeverLoaded(Damage damage)
    {
        var good = NewCache(new FakeCompiler());
        var a = good.GetImage("a.cu");
        var b = good.GetImage("b.cu");
        string path = Path.Combine(CacheDirectory, a.Key + ".cubin");
        byte[] entry = File.ReadAllBytes(path);
        byte[] damaged = damage switch
        {
            Damage.Truncated => entry[..^1],
            Damage.TruncatedHeader => entry[..40],
            Damage.Empty => [],
            Damage.FlippedImageByte => Flip(entry, KernelDiskCache.HeaderBytes + 3),
            Damage.FlippedChecksum => Flip(entry, 50),
            Damage.WrongMagic => Flip(entry, 0),
            Damage.OtherKeysEntry => File.ReadAllBytes(Path.Combine(CacheDirectory, b.Key + ".cubin")),
            Damage.LongerThanItSays => [.. entry, 0],
            _ => throw new ArgumentOutOfRangeException(nameof(damage)),
        };
        File.WriteAllBytes(path, damaged);

        var compiler = new FakeCompiler();
        var recovered = NewCache(compiler).GetImage("a.cu");
        Assert.That(recovered.Origin, Is.EqualTo(KernelImageOrigin.Compiled));
        Assert.That(recovered.Image, Is.EqualTo(a.Image));
        Assert.That(NewCache(new FakeCompiler()).GetImage("a.cu").Origin, Is.EqualTo(KernelImageOrigin.DiskCache), "the entry was rewritten");
        Assert.That(_warnings, Is.Empty, "a damaged entry is not a broken cache");
    }

    [Test]
    public void ACompileErrorCarriesTheFileTheOptionsAndTheLog()
    {
        var cache = NewCache(new FakeCompiler());
        var e = Assert.Throws<KernelCompileException>(() => cache.GetImage("bad.cu"))!;
        Assert.That(e.FileName, Is.EqualTo("bad.cu"));
        Assert.That(e.Log, Does.Contain("bad.cu(2): error: #error directive"));
        Assert.That(e.Message, Does.Contain("kernels/bad.cu").And.Contain("--gpu-architecture=sm_90").And.Contain("1 error detected"));
        Assert.That(Directory.GetFiles(CacheDirectory), Is.Empty, "nothing is cached for a failed compile");
        Assert.That(() => cache.GetImage("bad.cu"), Throws.InstanceOf<KernelCompileException>(), "and it fails again, the same way");
    }

    [Test]
    public void AFolderThatCannotBeCreatedDegradesToNoDiskCacheWithAWarning()
    {
        // A file where the folder should be: fails even for root, unlike permissions.
        string blocked = Path.Combine(Temp, "not-a-folder");
        File.WriteAllText(blocked, "");
        var compiler = new FakeCompiler();
        var cache = NewCache(compiler, directory: Path.Combine(blocked, "kernels"));
        Assert.That(cache.Directory, Is.Null);
        Assert.That(_warnings, Has.Count.EqualTo(1));
        Assert.That(_warnings[0], Does.Contain(Path.Combine(blocked, "kernels")).And.Contain("without a disk cache"));
        Assert.That(cache.GetImage("a.cu").Origin, Is.EqualTo(KernelImageOrigin.Compiled));
        Assert.That(cache.GetImage("b.cu").Origin, Is.EqualTo(KernelImageOrigin.Compiled));
        Assert.That(_warnings, Has.Count.EqualTo(1));
    }

    [Test]
    public void AFolderThatStopsBeingWritableDegradesOnceWithAWarning()
    {
        var cache = NewCache(new FakeCompiler());
        Assert.That(cache.Directory, Is.EqualTo(CacheDirectory));
        Directory.Delete(CacheDirectory);
        File.WriteAllText(CacheDirectory, ""); // the folder is now a file: reads miss, writes fail
        Assert.That(cache.GetImage("a.cu").Origin, Is.EqualTo(KernelImageOrigin.Compiled));
        Assert.That(cache.GetImage("b.cu").Origin, Is.EqualTo(KernelImageOrigin.Compiled));
        Assert.That(_warnings, Has.Count.EqualTo(1));
        Assert.That(_warnings[0], Does.Contain("cannot be").And.Contain("off for the rest of this process"));
        Assert.That(cache.Directory, Is.Null);
        Assert.That(Directory.GetFiles(Temp, "*.tmp", SearchOption.AllDirectories), Is.Empty);
    }

    [Test]
    public void WithTheDiskCacheOffEveryNewCacheCompiles()
    {
        var compiler = new FakeCompiler();
        NewCache(compiler, directory: null).GetImage("a.cu");
        NewCache(compiler, directory: null).GetImage("a.cu");
        Assert.That(compiler.Compiles, Is.EqualTo(2));
        Assert.That(Directory.Exists(CacheDirectory), Is.False);
    }

    [Test]
    public void ConcurrentRequestsForOneFileCompileItOnce()
    {
        var compiler = new FakeCompiler();
        var cache = NewCache(compiler);
        var images = new KernelImage[8];
        Parallel.For(0, images.Length, i => images[i] = cache.GetImage("a.cu"));
        Assert.That(compiler.Compiles, Is.EqualTo(1));
        Assert.That(images.Count(i => i.Origin == KernelImageOrigin.Compiled), Is.EqualTo(1));
    }

    [Test]
    public void OptionsAskForACubinForTheArchitectureWithNoIncludePath()
    {
        var options = KernelCache.CompileOptions("sm_90");
        Assert.That(options, Does.Contain("--gpu-architecture=sm_90").And.Contain("--std=c++17").And.Contain("--no-source-include"));
        Assert.That(options, Has.None.StartsWith("--include-path").And.None.StartsWith("-I"));
        Assert.That(() => NewCache(new FakeCompiler(), architecture: "compute_90"), Throws.ArgumentException.With.Property("ParamName").EqualTo("architecture"));
    }

    [Test]
    public void EveryEmbeddedFileHasAKey()
    {
        var cache = new KernelCache(KernelSourceCatalog.Embedded, new FakeCompiler(), "sm_90", KernelCacheOptions.Disabled);
        Assert.That(KernelSourceCatalog.Embedded.Files.Select(cache.KeyOf), Is.Unique);
    }

    [Test]
    public void TheDefaultFolderFollowsTheEnvironment()
    {
        static KernelCacheOptions With(params (string Name, string? Value)[] variables) =>
            KernelCacheOptions.FromEnvironment(name => variables.FirstOrDefault(v => v.Name == name).Value);

        Assert.That(With(("HOME", "/home/u")).Directory, Is.EqualTo("/home/u/.cache/phi2native/kernels"));
        Assert.That(With(("HOME", "/home/u"), ("XDG_CACHE_HOME", "/xdg")).Directory, Is.EqualTo("/xdg/phi2native/kernels"));
        Assert.That(With(("HOME", "/home/u"), ("XDG_CACHE_HOME", "relative")).Directory, Is.EqualTo("/home/u/.cache/phi2native/kernels"),
            "a relative XDG_CACHE_HOME is ignored, as the XDG spec says");
        Assert.That(With(("HOME", "/home/u"), (KernelCacheOptions.EnvironmentVariable, "/tmp/k")).Directory, Is.EqualTo("/tmp/k"));
        foreach (string off in new[] { "off", "0", "none", "FALSE" })
            Assert.That(With(("HOME", "/home/u"), (KernelCacheOptions.EnvironmentVariable, off)).Directory, Is.Null, off);
    }

    [Test]
    public void AnotherNvrtcLibraryFile_GivesAnotherKey_EvenWithTheSameSonameAndVersion()
    {
        var modified = new DateTime(2025, 8, 1, 12, 0, 0, DateTimeKind.Utc);
        const string wheel = "/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib/libnvrtc.so.13";
        string version = NvrtcKernelCompiler.DescribeVersion(13, 0, "libnvrtc.so.13");
        string Identity(string path = wheel, long length = 90_000_000, DateTime? time = null) =>
            NvrtcKernelCompiler.CacheIdentityOf(version, NvrtcKernelCompiler.FileIdentity(path, length, time ?? modified));
        string Key(string identity) => KernelCache.ComputeKey("a.cu", "src", [], ["--gpu-architecture=sm_90"], "sm_90", identity);

        string[] identities =
        [
            Identity(),
            Identity(length: 90_000_001),                    // a patch release under the same name
            Identity(time: modified.AddSeconds(1)),          // reinstalled
            Identity(path: "/usr/local/cuda-13.0/lib64/libnvrtc.so.13"),
            version,                                         // the file could not be read
        ];
        Assert.That(version, Is.EqualTo("NVRTC 13.0 (libnvrtc.so.13)"), "what reports print: the same on every machine with this NVRTC");
        Assert.That(identities[0], Does.Match(@"^NVRTC 13\.0 \(libnvrtc\.so\.13\), library file [0-9a-f]{16}$"));
        Assert.That(identities.Select(Key), Is.Unique, "each file identity is its own cache key");
        Assert.That(Identity(), Is.EqualTo(Identity()), "stable for the same file");
        Assert.That(NvrtcKernelCompiler.DescribeVersion(12, 8, null), Is.EqualTo("NVRTC 12.8"));

        var compiler = new FakeCompiler();
        Assert.That(((IKernelCompiler)compiler).CacheIdentity, Is.EqualTo(compiler.Version), "a compiler without a library file is keyed by its version");
    }

    [Test]
    public void FileIdentity_FollowsLinksToTheFile_AndChangesWithItsSizeAndTime()
    {
        string file = Path.Combine(Temp, "libnvrtc.so.13.0.48");
        string link = Path.Combine(Temp, "libnvrtc.so.13");
        File.WriteAllBytes(file, new byte[100]);
        File.CreateSymbolicLink(link, file);
        string? first = NvrtcKernelCompiler.FileIdentity(file);
        Assert.That(first, Does.Match("^[0-9a-f]{16}$"));
        Assert.That(NvrtcKernelCompiler.FileIdentity(link), Is.EqualTo(first), "the soname link stands for the file it names");

        var later = File.GetLastWriteTimeUtc(file).AddMinutes(1);
        File.SetLastWriteTimeUtc(file, later);
        string? touched = NvrtcKernelCompiler.FileIdentity(file);
        File.WriteAllBytes(file, new byte[101]);
        File.SetLastWriteTimeUtc(file, later); // the same time, another size
        Assert.That(new[] { first, touched, NvrtcKernelCompiler.FileIdentity(file) }, Is.Unique);
        Assert.That(NvrtcKernelCompiler.FileIdentity(Path.Combine(Temp, "missing.so")), Is.Null);
    }

    private static byte[] Flip(byte[] bytes, int at)
    {
        var copy = (byte[])bytes.Clone();
        copy[at] ^= 0x40;
        return copy;
    }
}
