using System.Reflection;
using System.Text.RegularExpressions;
using NUnit.Framework;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Cuda;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Repository;

/// <summary>
/// The project stands on its own, and its prose names what exists: every repository path that the Markdown files, the
/// kernel sources, the scripts and the C# comments cite (<c>src/...</c>, <c>kernels/...</c>, <c>tests/...</c>,
/// <c>bench/...</c>, globs included, and a partial path to a .cs or .cu file such as <c>Ops/Rotary/CpuRotary.cs</c>)
/// exists; every member of IBackend, CpuBackend and CudaBackend they mention (<c>IBackend</c> dot a name) exists; and nothing
/// points at a document outside the repository. Each failure names the file, the line and what it cites.
/// </summary>
[TestFixture]
public partial class DocumentationTests
{
    /// <summary>
    /// Paths that are cited but made, not committed: the published GPU runner (bench/gpu-check.sh --build, ignored by
    /// git) and the peer scripts the GPU runner's peers stage reads (NOT RUN until there is one).
    /// </summary>
    private static readonly string[] MadeNotCommitted = ["bench/gpu-runner", "bench/peers"];

    /// <summary>
    /// "file: path" citations known to be stale, each to be fixed where its file is being rewritten. An entry that no
    /// longer occurs fails the test, so this list only shrinks.
    /// </summary>
    private static readonly string[] KnownStale = [];

    // Written in two parts so that this file does not itself name what it forbids.
    private static readonly string[] OutsideDocuments =
    [
        "../" + "shared", "/work/" + "shared", "DESIGN" + ".md", "STYLE" + ".md", "design " + "note", "design " + "card",
        "the user's " + "document", "seeds" + "/",
    ];

    // What the build and the tools write (the .gitignore's folders).
    private static readonly string[] SkippedFolders = ["bin", "obj", ".git", ".vs", "TestResults", "artifacts", "tools", "__pycache__", "gpu-runner"];

    [Test]
    public void EveryCitedRepositoryPathExists()
    {
        var files = RepositoryFiles().Select(Relative).ToHashSet(StringComparer.Ordinal);
        var folders = files.SelectMany(Parents).ToHashSet(StringComparer.Ordinal);
        var missing = new List<string>();
        var stale = KnownStale.ToHashSet(StringComparer.Ordinal);
        foreach (var (file, line, text) in Prose())
        {
            foreach (Match m in RootedPath().Matches(text))
            {
                string path = WithoutParentSteps(m.Value.TrimEnd('.', '/'));
                if (KnownStale.Contains($"{file}: {path}")) { stale.Remove($"{file}: {path}"); continue; }
                if (MadeNotCommitted.Any(p => path == p || path.StartsWith(p + "/", StringComparison.Ordinal))) continue;
                bool found = path.Contains('*')
                    ? files.Concat(folders).Any(GlobPattern(path).IsMatch)
                    : files.Contains(path) || folders.Contains(path);
                if (!found) missing.Add($"{file}:{line}: {path}");
            }
            foreach (Match m in PartialSourcePath().Matches(text))
            {
                string path = m.Value;
                if (path.Split('/').Any(part => part.Length > 1 && part.All(c => char.IsUpper(c) || c == '_'))) continue; // DIR/x.cu: a placeholder
                if (!files.Any(f => f == path || f.EndsWith("/" + path, StringComparison.Ordinal))) missing.Add($"{file}:{line}: {path}");
            }
        }
        Assert.That(missing, Is.Empty, "paths cited in docs and comments that are not in the repository:\n" + string.Join("\n", missing));
        Assert.That(stale, Is.Empty, "known-stale citations that are gone: remove them from KnownStale");
    }

    [Test]
    public void NothingPointsOutsideTheRepository()
    {
        var offenders = new List<string>();
        foreach (var path in RepositoryFiles().Where(IsText))
        {
            var lines = File.ReadAllLines(path);
            for (int i = 0; i < lines.Length; i++)
                foreach (var name in OutsideDocuments)
                    if (lines[i].Contains(name, StringComparison.OrdinalIgnoreCase)) offenders.Add($"{Relative(path)}:{i + 1}: {name}");
        }
        Assert.That(offenders, Is.Empty, "the project must stand on its own: write what the code needs into README.md or kernels/README.md:\n" + string.Join("\n", offenders));
    }

    [Test]
    public void EveryMentionedBackendMemberExists()
    {
        var types = new Dictionary<string, Type>
        {
            ["IBackend"] = typeof(IBackend), ["CpuBackend"] = typeof(CpuBackend), ["CudaBackend"] = typeof(CudaBackend),
        };
        var missing = new List<string>();
        foreach (var (file, line, text) in Prose())
            foreach (Match m in BackendMember().Matches(text))
            {
                var type = types[m.Groups[1].Value];
                string member = m.Groups[2].Value;
                var all = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static;
                if (!type.GetInterfaces().Prepend(type).Any(t => t.GetMember(member, all).Length > 0)) missing.Add($"{file}:{line}: {m.Value}");
            }
        Assert.That(missing, Is.Empty, "backend members mentioned in docs and comments that do not exist (the ops live in Backends/Ops/<Family>/<X>Op.cs):\n" + string.Join("\n", missing));
    }

    [Test]
    public void TheKernelMapListsEveryKernelFile()
    {
        string readme = File.ReadAllText(Path.Combine(RepositoryRoot, "kernels", "README.md"));
        var listed = KernelMapRow().Matches(readme).Select(m => m.Groups[1].Value).Order(StringComparer.Ordinal);
        var files = Directory.EnumerateFiles(Path.Combine(RepositoryRoot, "kernels"), "*.cu").Select(Path.GetFileName)
            .Where(name => name != "mma_check.cu").Order(StringComparer.Ordinal); // not an op: the device checks' tensor-core tile
        Assert.That(listed, Is.EqualTo(files), "kernels/README.md's table of kernel files, launchers and ops");
    }

    [Test]
    public void TheScanSeesTheDocumentsItIsAbout()
    {
        var scanned = Prose().Select(p => p.File).ToHashSet(StringComparer.Ordinal);
        Assert.That(scanned, Is.SupersetOf(new[]
        {
            "README.md", "kernels/README.md", "kernels/attention.cu", "kernels/common.cuh", "bench/RESULTS.md", "tests/fixtures/README.md",
            "src/Phi2Native.Backends/Ops/Rotary/RotaryKernels.cs",
        }));
        // The path patterns find what they are for, and stop where a path ends.
        Assert.That(RootedPath().Matches("see `src/Phi2Native.Core/Tensors/IBackend.cs`, kernels/*.cu and Ops/<Family>/.").Select(m => m.Value),
            Is.EqualTo(new[] { "src/Phi2Native.Core/Tensors/IBackend.cs", "kernels/*.cu" }));
        Assert.That(PartialSourcePath().Matches("(Cuda/LayerNormKernels.cs; ../adamw.cu, my-kernels/gelu.cu, Ops/*/*Kernels.cs, CpuAdamW.cs)").Select(m => m.Value),
            Is.EqualTo(new[] { "Cuda/LayerNormKernels.cs", "CpuAdamW.cs" }));
    }

    /// <summary>
    /// (file, line, text) of the repository's prose: every line of its Markdown files, kernel sources and scripts, and the
    /// comments of its C# files.
    /// </summary>
    private static IEnumerable<(string File, int Line, string Text)> Prose()
    {
        foreach (var path in RepositoryFiles())
        {
            string extension = Path.GetExtension(path);
            bool csharp = extension == ".cs";
            if (!csharp && !IsProse(path)) continue;
            var lines = File.ReadAllLines(path);
            for (int i = 0; i < lines.Length; i++)
            {
                string text = lines[i];
                if (csharp)
                {
                    var comment = Comment().Match(text);
                    if (!comment.Success) continue;
                    text = comment.Groups[1].Value;
                }
                yield return (Relative(path), i + 1, text);
            }
        }
    }

    private static bool IsProse(string path) =>
        Path.GetExtension(path) is ".md" or ".cu" or ".cuh" or ".cpp" or ".h" or ".py" or ".sh" || Relative(path).StartsWith(".ci/", StringComparison.Ordinal);

    private static bool IsText(string path) =>
        IsProse(path) || Path.GetExtension(path) is ".cs" or ".csproj" or ".props" or ".targets" or ".cake" or ".json" or ".sln" or ".txt" or ".tsv";

    private static IEnumerable<string> RepositoryFiles()
    {
        var pending = new Stack<string>([RepositoryRoot]);
        while (pending.Count > 0)
        {
            string folder = pending.Pop();
            foreach (var file in Directory.EnumerateFiles(folder)) yield return file;
            foreach (var sub in Directory.EnumerateDirectories(folder))
                if (!SkippedFolders.Contains(Path.GetFileName(sub))) pending.Push(sub);
        }
    }

    /// <summary>The nearest folder above the test assembly that holds Phi2Native.sln or .git (a folder, or a worktree's file).</summary>
    private static string RepositoryRoot { get; } = FindRoot();

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        {
            string git = Path.Combine(dir.FullName, ".git");
            if (File.Exists(Path.Combine(dir.FullName, "Phi2Native.sln")) || Directory.Exists(git) || File.Exists(git)) return dir.FullName;
        }
        throw new DirectoryNotFoundException($"no Phi2Native.sln or .git above {AppContext.BaseDirectory}");
    }

    /// <summary>kernels/emu/../cast.cu as kernels/cast.cu.</summary>
    private static string WithoutParentSteps(string path)
    {
        var parts = new List<string>();
        foreach (var part in path.Split('/'))
            if (part == ".." && parts.Count > 0 && parts[^1] != "..") parts.RemoveAt(parts.Count - 1);
            else parts.Add(part);
        return string.Join('/', parts);
    }

    private static string Relative(string path) => Path.GetRelativePath(RepositoryRoot, path).Replace('\\', '/');

    private static IEnumerable<string> Parents(string path)
    {
        for (int slash = path.LastIndexOf('/'); slash > 0; slash = path.LastIndexOf('/', slash - 1))
            yield return path[..slash];
    }

    /// <summary>A glob over repository-relative paths: ** any folders, * any name part.</summary>
    private static Regex GlobPattern(string glob) =>
        new("^" + Regex.Escape(glob).Replace(@"\*\*/", "(.*/)?").Replace(@"\*\*", ".*").Replace(@"\*", "[^/]*") + "$");

    // A path from one of the four top folders; it ends at a character no file name here uses (a space, `, <, {, ...).
    [GeneratedRegex(@"(?<![\w./\\-])(src|kernels|tests|bench)/[\w.*/+-]*[\w*/]")]
    private static partial Regex RootedPath();

    // A partial path or a file name ending in .cs, .cu or .cuh, not rooted in the four top folders nor relative (../x.cu).
    [GeneratedRegex(@"(?<![\w./\\<>{}*-])(?!(src|kernels|tests|bench)/)[A-Za-z_][\w.]*(/[A-Za-z_][\w.]*)*\.(cs|cu|cuh)\b")]
    private static partial Regex PartialSourcePath();

    // The text of a // or /// comment (not a URL's //).
    [GeneratedRegex(@"(?<!:)//+(.*)$")]
    private static partial Regex Comment();

    // | `layernorm.cu` | ...
    [GeneratedRegex(@"^\| `(\w+\.cu)` \|", RegexOptions.Multiline)]
    private static partial Regex KernelMapRow();

    [GeneratedRegex(@"\b(IBackend|CpuBackend|CudaBackend)\.([A-Z]\w*)")]
    private static partial Regex BackendMember();
}
