using System.Text;

namespace Phi2Native.Cuda;

/// <summary>How a file of the kernel source folder relates to the embedded file of its name.</summary>
internal enum KernelSourceChange
{
    /// <summary>Its text differs from the embedded file's.</summary>
    Edited,

    /// <summary>Its text is the embedded file's.</summary>
    Unchanged,

    /// <summary>No embedded file has its name.</summary>
    Added,
}

/// <summary>One file taken from the kernel source folder.</summary>
/// <param name="Name">The file name, e.g. <c>elementwise.cu</c>.</param>
/// <param name="Path">Its full path.</param>
/// <param name="Change">How it relates to the embedded file of that name.</param>
internal sealed record KernelSourceFile(string Name, string Path, KernelSourceChange Change);

/// <summary>
/// The kernel sources with a folder's files in place of the embedded ones (<see cref="KernelSourceOptions"/>): the
/// resulting catalog, and which files came from the folder and whether they differ from the embedded copies.
/// </summary>
internal sealed class KernelSourceOverride
{
    private KernelSourceOverride(KernelSourceOptions options, string directory, KernelSourceCatalog catalog, IReadOnlyList<KernelSourceFile> files)
    {
        Options = options;
        Directory = directory;
        Catalog = catalog;
        Files = files;
    }

    /// <summary>The options the folder was named by (its setting, for messages; the notice sink).</summary>
    public KernelSourceOptions Options { get; }

    /// <summary>The folder, as a full path.</summary>
    public string Directory { get; }

    /// <summary>Every kernel file and header: the folder's where it has one, else the embedded one.</summary>
    public KernelSourceCatalog Catalog { get; }

    /// <summary>The files taken from the folder, in ordinal order of name.</summary>
    public IReadOnlyList<KernelSourceFile> Files { get; }

    /// <summary>Whether any file from the folder differs from, or is not among, the embedded ones.</summary>
    public bool ChangesAnything => Files.Any(f => f.Change != KernelSourceChange.Unchanged);

    /// <summary>
    /// The embedded sources with <paramref name="options"/>' folder laid over them, or null when no folder is set.
    /// </summary>
    /// <exception cref="Phi2Exception">
    /// The folder does not exist, holds no <c>*.cu</c> or <c>*.cuh</c>, has a file that cannot be read, or defines a
    /// kernel twice; the message names the setting (e.g. <c>PHI2NATIVE_KERNEL_SOURCES</c>) and the folder.
    /// </exception>
    public static KernelSourceOverride? Load(KernelSourceOptions options) => Load(options, KernelSourceCatalog.Embedded);

    /// <summary><see cref="Load(KernelSourceOptions)"/> over <paramref name="embedded"/> instead of this assembly's kernels.</summary>
    internal static KernelSourceOverride? Load(KernelSourceOptions options, KernelSourceCatalog embedded)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (string.IsNullOrWhiteSpace(options.Directory)) return null;
        string setting = $"{options.Setting}={options.Directory}";
        string directory = Path.GetFullPath(options.Directory.Trim());
        string expected = $"a folder of kernel sources (*.cu, *.cuh) to use instead of the embedded ones: {EmbeddedNames(embedded)}";
        if (!System.IO.Directory.Exists(directory))
            throw new Phi2Exception($"{setting}: {(File.Exists(directory) ? "is a file" : "no such folder")}; expected {expected}");

        var texts = new SortedDictionary<string, string>(StringComparer.Ordinal);
        try
        {
            foreach (string path in System.IO.Directory.EnumerateFiles(directory))
            {
                string name = Path.GetFileName(path);
                if (name.EndsWith(".cu", StringComparison.Ordinal) || name.EndsWith(".cuh", StringComparison.Ordinal))
                    texts[name] = File.ReadAllText(path, Encoding.UTF8);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new Phi2Exception($"{setting}: cannot be read ({e.Message})", e);
        }
        if (texts.Count == 0) throw new Phi2Exception($"{setting} holds no *.cu or *.cuh file; expected {expected}");

        var kernelFiles = embedded.Files.ToDictionary(f => f, embedded.SourceOf, StringComparer.Ordinal);
        var headers = embedded.Headers.ToDictionary(h => h.Name, h => h.Text, StringComparer.Ordinal);
        var files = new List<KernelSourceFile>();
        var paths = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (name, text) in texts)
        {
            var into = name.EndsWith(".cuh", StringComparison.Ordinal) ? headers : kernelFiles;
            var change = !into.TryGetValue(name, out string? original) ? KernelSourceChange.Added
                : original == text ? KernelSourceChange.Unchanged : KernelSourceChange.Edited;
            into[name] = text;
            string path = Path.Combine(directory, name);
            paths[name] = path;
            files.Add(new KernelSourceFile(name, path, change));
        }
        KernelSourceCatalog catalog;
        try
        {
            catalog = new KernelSourceCatalog(kernelFiles, headers.Select(h => new KernelHeader(h.Key, h.Value))) { SourcePaths = paths };
        }
        catch (ArgumentException e)
        {
            throw new Phi2Exception($"{setting}: {e.Message.Split(" (Parameter")[0]}", e);
        }
        return new KernelSourceOverride(options, directory, catalog, files);
    }

    /// <summary>
    /// "kernel sources from /dir (PHI2NATIVE_KERNEL_SOURCES): elementwise.cu (edited), common.cuh (as embedded); the
    /// other 14 files are the embedded ones".
    /// </summary>
    public string Describe()
    {
        int others = Catalog.Files.Count + Catalog.Headers.Count - Files.Count;
        string list = string.Join(", ", Files.Select(f => $"{f.Name} ({f.Change switch
        {
            KernelSourceChange.Edited => "edited",
            KernelSourceChange.Unchanged => "as embedded",
            _ => "new",
        }})"));
        return $"kernel sources from {Directory} ({Options.Setting}): {list}; " +
               others switch
               {
                   0 => "no file is the embedded one",
                   1 => "the other file is the embedded one",
                   _ => $"the other {others} files are the embedded ones",
               };
    }

    private static string EmbeddedNames(KernelSourceCatalog embedded) =>
        string.Join(", ", embedded.Headers.Select(h => h.Name).Concat(embedded.Files));
}
