using System.Text.RegularExpressions;
using NUnit.Framework;
using Phi2Native.Cuda;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Cuda;

/// <summary>
/// The kernel sources embedded for NVRTC against the files on disk (so new kernel files are covered without naming
/// them here), and the project's rules for them: unique entry point names, no include but common.cuh, and no
/// conditional compilation outside common.cuh (CI must run the very code the GPU runs).
/// </summary>
[TestFixture]
public partial class KernelSourceTests
{
    private static string KernelsDirectory => Path.Combine(Fixtures.RepositoryRoot, "kernels");

    private static KernelSourceCatalog Embedded => KernelSourceCatalog.Embedded;

    [Test]
    public void EveryKernelFileOnDiskIsEmbeddedWithTheSameText()
    {
        var onDisk = Directory.EnumerateFiles(KernelsDirectory, "*.cu").Order(StringComparer.Ordinal).ToList();
        Assert.That(onDisk, Is.Not.Empty);
        Assert.That(Embedded.Files, Is.EqualTo(onDisk.Select(Path.GetFileName)));
        foreach (string path in onDisk)
            Assert.That(Embedded.SourceOf(Path.GetFileName(path)), Is.EqualTo(File.ReadAllText(path)), path);
    }

    [Test]
    public void EveryHeaderOnDiskIsEmbeddedWithTheSameText()
    {
        var onDisk = Directory.EnumerateFiles(KernelsDirectory, "*.cuh").Order(StringComparer.Ordinal).ToList();
        Assert.That(onDisk.Select(Path.GetFileName), Does.Contain("common.cuh"));
        Assert.That(Embedded.Headers.Select(h => h.Name), Is.EqualTo(onDisk.Select(Path.GetFileName)));
        foreach (var header in Embedded.Headers)
            Assert.That(header.Text, Is.EqualTo(File.ReadAllText(Path.Combine(KernelsDirectory, header.Name))), header.Name);
    }

    [Test]
    public void TheEmulatorsOwnFilesAreNotEmbedded()
    {
        var resources = typeof(KernelSourceCatalog).Assembly.GetManifestResourceNames()
            .Where(r => r.StartsWith(KernelSourceCatalog.ResourcePrefix, StringComparison.Ordinal)).ToList();
        var emulatorFiles = Directory.EnumerateFiles(Path.Combine(KernelsDirectory, "emu")).Select(Path.GetFileName).ToList();
        Assert.That(emulatorFiles, Is.Not.Empty);
        Assert.That(resources.Select(r => r[KernelSourceCatalog.ResourcePrefix.Length..]).Intersect(emulatorFiles), Is.Empty);
        Assert.That(Embedded.KernelFiles.Keys, Has.None.StartsWith("emu_test_"));
    }

    [Test]
    public void KernelNamesAreUniqueAndEveryFileDefinesOne()
    {
        // The catalog refuses duplicates when it is built; count independently as well.
        var declared = Embedded.Files.SelectMany(f => KernelSourceCatalog.KernelNames(Embedded.SourceOf(f)).Select(k => (Kernel: k, File: f))).ToList();
        Assert.That(declared.Select(d => d.Kernel), Is.Unique);
        Assert.That(Embedded.KernelFiles, Has.Count.EqualTo(declared.Count));
        foreach (string file in Embedded.Files)
            Assert.That(declared.Any(d => d.File == file), $"{file} defines no PHI2_KERNEL entry point");
        Assert.That(Embedded.FileOf("add_f32"), Is.EqualTo("elementwise.cu"));
    }

    [Test]
    public void KernelFilesIncludeNothingButTheEmbeddedHeaders()
    {
        // NVRTC gets no include path: only the headers handed over by name (kernels/*.cuh: common.cuh, gelu.cuh, rotary.cuh), which
        // the cache key covers too.
        var headers = Embedded.Headers.Select(h => $"\"{h.Name}\"").ToList();
        Assert.That(headers, Does.Contain("\"common.cuh\""));
        foreach (string file in Embedded.Files)
        {
            var includes = IncludeDirective().Matches(Embedded.SourceOf(file)).Select(m => m.Groups[1].Value).ToList();
            Assert.That(includes, Is.SubsetOf(headers), $"{file} may include only the embedded headers {string.Join(", ", headers)} (NVRTC gets no include path)");
        }
    }

    [Test]
    public void NoKernelFileHasConditionalCompilation()
    {
        var checkedFiles = Embedded.Files.Select(f => (Name: f, Text: Embedded.SourceOf(f)))
            .Concat(Embedded.Headers.Where(h => h.Name != "common.cuh").Select(h => (h.Name, h.Text)));
        foreach (var (name, text) in checkedFiles)
        {
            var found = ConditionalDirective().Matches(text).Select(m => m.Value.Trim()).ToList();
            Assert.That(found, Is.Empty, $"{name}: the only two-way code allowed is inside common.cuh's wrappers");
        }
        Assert.That(ConditionalDirective().IsMatch("  #  ifdef __CUDACC_RTC__\n"), "the rule must see indented directives");
        Assert.That(ConditionalDirective().IsMatch("#include \"common.cuh\"\n#pragma once\n"), Is.False);
    }

    [Test]
    public void ADuplicateKernelNameIsRefusedNamingBothFiles()
    {
        var files = new Dictionary<string, string>
        {
            ["a.cu"] = "PHI2_KERNEL void twice(int n) {}",
            ["b.cu"] = "PHI2_KERNEL  void  twice (float* x) {}",
        };
        Assert.That(() => new KernelSourceCatalog(files, []),
            Throws.ArgumentException.With.Message.Contains("'twice' is defined in both a.cu and b.cu"));
    }

    [Test]
    public void AnUnknownKernelOrFileIsRefusedNamingTheArgument()
    {
        Assert.That(() => Embedded.FileOf("no_such_kernel"),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("kernelName").And.Message.Contains("no_such_kernel"));
        Assert.That(() => Embedded.SourceOf("missing.cu"), Throws.ArgumentException.With.Property("ParamName").EqualTo("fileName"));
        Assert.That(() => new KernelSourceCatalog(new Dictionary<string, string> { ["emu/x.cu"] = "" }, []), Throws.ArgumentException);
    }

    [GeneratedRegex(@"^\s*#\s*include\s*([<""][^>""]*[>""])", RegexOptions.Multiline)]
    private static partial Regex IncludeDirective();

    [GeneratedRegex(@"^\s*#\s*(if|ifdef|ifndef|elif|elifdef|elifndef)\b", RegexOptions.Multiline)]
    private static partial Regex ConditionalDirective();
}
