using System.Text;
using NUnit.Framework;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Emulator;
using Phi2Native.Cuda.Gpu;

namespace Phi2Native.Tests.Cuda;

/// <summary>
/// PHI2NATIVE_KERNEL_SOURCES's bookkeeping, without a compiler: which files a folder replaces, adds or repeats, the
/// catalog that results, the notice, the refusals (a missing or empty folder, a kernel defined twice, a new file on
/// the emulator), the cache key of a run-time emulator, and how g++'s messages are made to name the folder's files.
/// </summary>
[TestFixture]
public class KernelSourceOverrideTests : Support.TemporaryDirectoryTest
{
    private static readonly KernelSourceCatalog Embedded = new(
        new Dictionary<string, string>
        {
            ["a.cu"] = "#include \"common.cuh\"\nPHI2_KERNEL void ka(int n) {}\n",
            ["b.cu"] = "#include \"common.cuh\"\nPHI2_KERNEL void kb(int n) {}\n",
        },
        [new KernelHeader("common.cuh", "#pragma once\n")]);

    private KernelSourceOverride? Load(string? directory, KernelSourceCatalog? embedded = null) =>
        KernelSourceOverride.Load(new KernelSourceOptions { Directory = directory, Setting = "PHI2NATIVE_KERNEL_SOURCES" }, embedded ?? Embedded);

    private void Write(string name, string text) => File.WriteAllText(Path.Combine(Temp, name), text);

    [Test]
    public void NoFolder_IsTheEmbeddedKernels()
    {
        Assert.That(Load(null), Is.Null);
        Assert.That(Load("  "), Is.Null);
        Assert.That(KernelSourceOptions.FromEnvironment(_ => null).Directory, Is.Null);
        Assert.That(KernelSourceOptions.FromEnvironment(_ => " ").Directory, Is.Null);
        var fromVariable = KernelSourceOptions.FromEnvironment(name => name == "PHI2NATIVE_KERNEL_SOURCES" ? " /k " : null);
        Assert.That(fromVariable.Directory, Is.EqualTo("/k"));
        Assert.That(fromVariable.Setting, Is.EqualTo(KernelSourceOptions.EnvironmentVariable));
    }

    [Test]
    public void EachFileOfTheFolderReplacesItsNamesake_TheOthersStayEmbedded()
    {
        Write("a.cu", "#include \"common.cuh\"\nPHI2_KERNEL void ka(int n) { /* edited */ }\n");
        Write("common.cuh", "#pragma once\n");                  // the same text as embedded
        Write("extra.cuh", "#pragma once\n#define X 1\n");       // a header of its own
        Write("notes.txt", "not a kernel file");
        Directory.CreateDirectory(Path.Combine(Temp, "emu"));
        File.WriteAllText(Path.Combine(Temp, "emu", "b.cu"), "in a subfolder: not read");

        var sources = Load(Temp)!;
        Assert.That(sources.Directory, Is.EqualTo(Path.GetFullPath(Temp)));
        Assert.That(sources.Files.Select(f => (f.Name, f.Change)), Is.EqualTo(new[]
        {
            ("a.cu", KernelSourceChange.Edited),
            ("common.cuh", KernelSourceChange.Unchanged),
            ("extra.cuh", KernelSourceChange.Added),
        }));
        Assert.That(sources.Files[0].Path, Is.EqualTo(Path.Combine(Temp, "a.cu")));
        Assert.That(sources.ChangesAnything, Is.True);
        Assert.That(sources.Catalog.SourceOf("a.cu"), Does.Contain("edited"));
        Assert.That(sources.Catalog.SourceOf("b.cu"), Is.EqualTo(Embedded.SourceOf("b.cu")));
        Assert.That(sources.Catalog.Headers.Select(h => h.Name), Is.EqualTo(new[] { "common.cuh", "extra.cuh" }));
        Assert.That(sources.Catalog.DisplayNameOf("a.cu"), Is.EqualTo(Path.Combine(Temp, "a.cu")), "compilers name the folder's file by its path");
        Assert.That(sources.Catalog.DisplayNameOf("b.cu"), Is.EqualTo("b.cu"));
        Assert.That(sources.Catalog.Identity, Is.Not.EqualTo(Embedded.Identity), "its modules are not the embedded ones'");
        Assert.That(sources.Describe(), Is.EqualTo(
            $"kernel sources from {Temp} (PHI2NATIVE_KERNEL_SOURCES): a.cu (edited), common.cuh (as embedded), extra.cuh (new); " +
            "the other file is the embedded one"));
    }

    [Test]
    public void AFolderRepeatingTheEmbeddedFiles_ChangesNothing()
    {
        Write("b.cu", Embedded.SourceOf("b.cu"));
        var sources = Load(Temp)!;
        Assert.That(sources.ChangesAnything, Is.False);
        Assert.That(sources.Catalog.Identity, Is.EqualTo(Embedded.Identity));
    }

    [Test]
    public void ANewKernelFile_JoinsTheCatalog_ForNvrtc()
    {
        Write("c.cu", "#include \"common.cuh\"\nPHI2_KERNEL void kc(int n) {}\n");
        var sources = Load(Temp)!;
        Assert.That(sources.Files.Single().Change, Is.EqualTo(KernelSourceChange.Added));
        Assert.That(sources.Catalog.Files, Is.EqualTo(new[] { "a.cu", "b.cu", "c.cu" }));
        Assert.That(sources.Catalog.FileOf("kc"), Is.EqualTo("c.cu"));
    }

    [Test]
    public void AMissingFolder_AFile_OrAFolderWithoutKernelFiles_IsAnErrorNamingTheVariable()
    {
        string missing = Path.Combine(Temp, "missing");
        Assert.That(() => Load(missing), Throws.InstanceOf<Phi2Exception>().With.Message.EqualTo(
            $"PHI2NATIVE_KERNEL_SOURCES={missing}: no such folder; expected a folder of kernel sources (*.cu, *.cuh) to use instead of " +
            "the embedded ones: common.cuh, a.cu, b.cu"));
        Write("a.txt", "");
        Assert.That(() => Load(Path.Combine(Temp, "a.txt")), Throws.InstanceOf<Phi2Exception>().With.Message.Contain("a.txt: is a file"));
        Assert.That(() => Load(Temp), Throws.InstanceOf<Phi2Exception>().With.Message.StartWith($"PHI2NATIVE_KERNEL_SOURCES={Temp} holds no *.cu or *.cuh file"));
        var option = new KernelSourceOptions { Directory = missing };
        Assert.That(() => KernelSourceOverride.Load(option), Throws.InstanceOf<Phi2Exception>().With.Message.StartWith($"KernelSourceOptions.Directory={missing}:"));
    }

    [Test]
    public void AKernelDefinedTwice_IsAnErrorNamingBothFiles()
    {
        Write("c.cu", "#include \"common.cuh\"\nPHI2_KERNEL void ka(int n) {}\n");
        Assert.That(() => Load(Temp), Throws.InstanceOf<Phi2Exception>().With.Message.EqualTo(
            $"PHI2NATIVE_KERNEL_SOURCES={Temp}: kernel 'ka' is defined in both a.cu and c.cu: entry point names must be unique across kernels/*.cu"));
    }

    [Test]
    public void TheEmulator_RefusesANewKernelFile_BeforeRunningAnyCompiler()
    {
        Write("c.cu", "#include \"common.cuh\"\nPHI2_KERNEL void kc(int n) {}\n");
        var builder = new EmulatorBuilder("/no/such/compiler");
        Assert.That(() => builder.Build(Load(Temp)!, KernelCacheOptions.Disabled), Throws.InstanceOf<Phi2Exception>().With.Message.StartWith(
            $"PHI2NATIVE_KERNEL_SOURCES={Temp}: c.cu is not among the embedded kernel files, and the emulated device cannot run a new one: " +
            "the emulator's table of entry points (kernels/emu/kernels.cpp) is written by hand"));
    }

    [Test]
    public void TheEmulator_WithoutItsCompiler_SaysSo()
    {
        Write("elementwise.cu", KernelSourceCatalog.Embedded.SourceOf("elementwise.cu") + "\n// edited\n");
        var sources = KernelSourceOverride.Load(new KernelSourceOptions { Directory = Temp, Setting = "PHI2NATIVE_KERNEL_SOURCES" })!;
        Assert.That(() => new EmulatorBuilder("/no/such/g++").Build(sources, KernelCacheOptions.Disabled),
            Throws.InstanceOf<Phi2Exception>().With.Message.Contain("'/no/such/g++' cannot be run").And.Message.Contain("install g++"));
    }

    [Test]
    public void TheEmulatorsSourceTree_IsTheKernelsFolderWithEmu_AndItsKeyFollowsEveryFile()
    {
        var tree = EmulatorBuilder.SourceTree(KernelSourceCatalog.Embedded);
        Assert.That(tree.Keys, Does.Contain("kernels/elementwise.cu").And.Contain("kernels/common.cuh").And.Contain("kernels/emu/kernels.cpp")
            .And.Contain("kernels/emu/launch.cpp").And.Contain("kernels/emu/emu.h").And.Contain("kernels/emu/test_kernels.cu")
            .And.Contain("kernels/emu/cxxflags"));
        Assert.That(tree.Keys.Count(k => k.StartsWith("kernels/emu/", StringComparison.Ordinal) && !k[12..].Contains('/')),
            Is.EqualTo(Directory.GetFiles(Path.Combine(RepositoryKernels, "emu")).Length), "every file of kernels/emu is embedded");

        string key = EmulatorBuilder.Key(tree, "g++ 12.2");
        Assert.That(key, Does.Match("^[0-9a-f]{64}$"));
        Assert.That(EmulatorBuilder.Key(tree, "g++ 12.2"), Is.EqualTo(key));
        Assert.That(EmulatorBuilder.Key(tree, "g++ 13.1"), Is.Not.EqualTo(key), "another compiler");
        var edited = new SortedDictionary<string, string>(tree) { ["kernels/elementwise.cu"] = tree["kernels/elementwise.cu"] + " " };
        Assert.That(EmulatorBuilder.Key(edited, "g++ 12.2"), Is.Not.EqualTo(key), "another source");
        var flags = new SortedDictionary<string, string>(tree) { ["kernels/emu/cxxflags"] = tree["kernels/emu/cxxflags"] + " -O3" };
        Assert.That(EmulatorBuilder.Key(flags, "g++ 12.2"), Is.Not.EqualTo(key), "other flags");
    }

    [Test]
    public void TheGxxFlags_HaveOneSourceOfTruth_ReadByMsBuildAndEmbeddedForTheRuntimeBuild()
    {
        string flags = File.ReadAllText(Path.Combine(RepositoryKernels, "emu", "cxxflags"));
        Assert.That(EmulatorBuilder.SourceTree(KernelSourceCatalog.Embedded)["kernels/emu/cxxflags"], Is.EqualTo(flags));
        string project = File.ReadAllText(Path.Combine(RepositoryKernels, "..", "src", "Phi2Native.Cuda", "Phi2Native.Cuda.csproj"));
        Assert.That(project, Does.Contain("@&quot;$(Phi2KernelsDir)emu/cxxflags&quot;"), "the MSBuild target passes the response file");
        foreach (string flag in flags.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            Assert.That(project, Does.Not.Contain(" " + flag + " "), $"{flag} is written only in kernels/emu/cxxflags");
    }

    [Test]
    public void GxxMessages_NameTheFoldersFilesByPath_AndTheFirstErrorsFile()
    {
        KernelSourceFile[] fromFolder =
        [
            new("elementwise.cu", "/home/r/k/elementwise.cu", KernelSourceChange.Edited),
            new("common.cuh", "/home/r/k/common.cuh", KernelSourceChange.Edited),
        ];
        string output =
            "In file included from kernels/emu/kernels.cpp:5:\n" +
            "kernels/emu/../elementwise.cu: In function 'void scale_f32(const float*, float*, float, int)':\n" +
            "kernels/emu/../elementwise.cu:21:5: error: 'oops' was not declared in this scope\n" +
            "In file included from kernels/emu/../reduce.cu:22,\n" +
            "kernels/common.cuh:40:1: error: expected ';'\n" +
            "kernels/elementwise.cuh:1:1: note: not a file of the folder\n";
        string mapped = EmulatorBuilder.MapPaths(output, fromFolder);
        Assert.That(mapped, Is.EqualTo(
            "In file included from kernels/emu/kernels.cpp:5:\n" +
            "/home/r/k/elementwise.cu: In function 'void scale_f32(const float*, float*, float, int)':\n" +
            "/home/r/k/elementwise.cu:21:5: error: 'oops' was not declared in this scope\n" +
            "In file included from kernels/reduce.cu:22,\n" +
            "/home/r/k/common.cuh:40:1: error: expected ';'\n" +
            "kernels/elementwise.cuh:1:1: note: not a file of the folder\n"));
        Assert.That(EmulatorBuilder.FirstErrorFile(mapped), Is.EqualTo("/home/r/k/elementwise.cu"));
        Assert.That(EmulatorBuilder.FirstErrorFile("kernels/emu/kernels.cpp:80:9: fatal error: x.cu: No such file"), Is.EqualTo("kernels/emu/kernels.cpp"));
        Assert.That(EmulatorBuilder.FirstErrorFile("/usr/bin/ld: undefined reference to `foo'\ncollect2: error: ld returned 1 exit status"), Is.Null);
    }

    [Test]
    public void NvrtcCompilesAFoldersFileUnderItsPath_SoItsErrorsNameIt()
    {
        Write("a.cu", "#include \"common.cuh\"\n#error planted\n");
        var sources = Load(Temp)!;
        var compiler = new NamingCompiler();
        var cache = new KernelCache(sources.Catalog, compiler, "sm_90", KernelCacheOptions.Disabled);
        var e = Assert.Throws<KernelCompileException>(() => cache.GetImage("a.cu"))!;
        string path = Path.Combine(Temp, "a.cu");
        Assert.That(compiler.Names, Is.EqualTo(new[] { path }));
        Assert.That(e.Message, Does.StartWith($"NVRTC could not compile {path} (NVRTC_ERROR_COMPILATION)"));
        Assert.That(e.Message, Does.Contain($"{path}(2): error"));
        cache.GetImage("b.cu");
        Assert.That(compiler.Names, Is.EqualTo(new[] { path, "b.cu" }), "an embedded file keeps its name");
        Assert.That(cache.KeyOf("a.cu"), Is.Not.EqualTo(new KernelCache(Embedded, compiler, "sm_90", KernelCacheOptions.Disabled).KeyOf("a.cu")),
            "the key holds the source's text");
    }

    // Records the names it is asked to compile under, and fails on #error as NVRTC would, naming the file and line.
    private sealed class NamingCompiler : IKernelCompiler
    {
        public List<string> Names { get; } = [];
        public string Version => "FakeRTC 1.0";

        public KernelCompilation Compile(string fileName, string source, IReadOnlyList<KernelHeader> headers, IReadOnlyList<string> options)
        {
            Names.Add(fileName);
            int line = Array.FindIndex(source.Split('\n'), l => l.StartsWith("#error", StringComparison.Ordinal)) + 1;
            if (line > 0) throw new KernelCompileException(fileName, options, "NVRTC_ERROR_COMPILATION", $"{fileName}({line}): error: #error directive: planted");
            return new KernelCompilation(Encoding.UTF8.GetBytes(source), "");
        }
    }

    private static string RepositoryKernels => Path.Combine(Support.Fixtures.RepositoryRoot, "kernels");
}
