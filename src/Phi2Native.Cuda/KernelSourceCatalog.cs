using System.Reflection;
using System.Text;
using System.Text.RegularExpressions;

namespace Phi2Native.Cuda;

/// <summary>A header the kernels include (kernels/*.cuh), handed to NVRTC by name so no include path is needed.</summary>
/// <param name="Name">The file name, exactly as kernels write it in <c>#include "..."</c>, e.g. <c>common.cuh</c>.</param>
/// <param name="Text">The header's source.</param>
internal sealed record KernelHeader(string Name, string Text);

/// <summary>
/// The CUDA C++ sources of the kernels: every kernels/*.cu and kernels/*.cuh, embedded in this assembly as resources
/// named <c>Phi2Native.Kernels.{file}</c> (kernels/emu is the emulator's, never NVRTC's: it is embedded apart, for
/// the emulated device's run-time builds), or those with a folder's edited files laid over them (<see cref="KernelSourceOptions"/>).
/// It maps each kernel entry point (<c>PHI2_KERNEL void name(</c>) to the file that defines it, so a launch by name finds its module.
/// </summary>
internal sealed partial class KernelSourceCatalog
{
    /// <summary>The prefix of the embedded resources' logical names (set in Phi2Native.csproj).</summary>
    public const string ResourcePrefix = "Phi2Native.Kernels.";

    private static readonly Lazy<KernelSourceCatalog> EmbeddedOnce = new(LoadEmbedded, LazyThreadSafetyMode.ExecutionAndPublication);

    private readonly SortedDictionary<string, string> _files;
    private readonly Dictionary<string, string> _kernelFile;

    /// <summary>
    /// Builds a catalog from kernel files (<c>*.cu</c>: name to source) and headers. Every kernel name must be unique
    /// across the files.
    /// </summary>
    /// <exception cref="ArgumentException">A file name is not a plain <c>*.cu</c> name, a header not <c>*.cuh</c>, or two files define the same kernel.</exception>
    public KernelSourceCatalog(IReadOnlyDictionary<string, string> kernelFiles, IEnumerable<KernelHeader> headers)
    {
        ArgumentNullException.ThrowIfNull(kernelFiles);
        ArgumentNullException.ThrowIfNull(headers);
        _files = new SortedDictionary<string, string>(StringComparer.Ordinal);
        _kernelFile = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (file, source) in kernelFiles)
        {
            if (!IsPlainName(file, ".cu")) throw new ArgumentException($"'{file}' is not a kernel file name (name.cu, no folder)", nameof(kernelFiles));
            _files.Add(file, source);
        }
        foreach (var (file, source) in _files)
        {
            foreach (string kernel in KernelNames(source))
            {
                if (_kernelFile.TryGetValue(kernel, out string? other))
                    throw new ArgumentException(other == file
                        ? $"kernel '{kernel}' is defined twice in {file}"
                        : $"kernel '{kernel}' is defined in both {other} and {file}: entry point names must be unique across kernels/*.cu", nameof(kernelFiles));
                _kernelFile.Add(kernel, file);
            }
        }
        Headers = [.. headers.OrderBy(h => h.Name, StringComparer.Ordinal)];
        foreach (var h in Headers)
            if (!IsPlainName(h.Name, ".cuh")) throw new ArgumentException($"'{h.Name}' is not a header name (name.cuh, no folder)", nameof(headers));
        if (Headers.Select(h => h.Name).Distinct().Count() != Headers.Count) throw new ArgumentException("two headers share a name", nameof(headers));
    }

    /// <summary>The kernels embedded in this assembly (loaded once per process).</summary>
    public static KernelSourceCatalog Embedded => EmbeddedOnce.Value;

    /// <summary>Kernel file names (<c>elementwise.cu</c>, ...), in ordinal order.</summary>
    public IReadOnlyList<string> Files => [.. _files.Keys];

    /// <summary>The headers, in ordinal order of name.</summary>
    public IReadOnlyList<KernelHeader> Headers { get; }

    /// <summary>
    /// The full path of each file that came from a folder of kernel sources (<see cref="KernelSourceOptions"/>), by
    /// file name; empty for the embedded kernels.
    /// </summary>
    internal IReadOnlyDictionary<string, string> SourcePaths { get; init; } = new Dictionary<string, string>();

    /// <summary>
    /// 64 hex digits that differ between catalogs of different sources (a hash of every file's and header's name and
    /// text), computed once: what tells apart the modules of two catalogs loaded into one context.
    /// </summary>
    internal string Identity => _identity ??= KernelDiskCache.Hash(
        _files.SelectMany(f => new[] { "file", f.Key, f.Value }).Concat(Headers.SelectMany(h => new[] { "header", h.Name, h.Text })));

    private string? _identity;

    /// <summary>What names <paramref name="fileName"/> in compiler messages: its full path where it came from a folder, else the name.</summary>
    internal string DisplayNameOf(string fileName) => SourcePaths.TryGetValue(fileName, out string? path) ? path : fileName;

    /// <summary>Every kernel entry point and the file that defines it.</summary>
    public IReadOnlyDictionary<string, string> KernelFiles => _kernelFile;

    /// <summary>The source of kernel file <paramref name="fileName"/>.</summary>
    /// <exception cref="ArgumentException">No such file.</exception>
    public string SourceOf(string fileName)
    {
        ArgumentNullException.ThrowIfNull(fileName);
        return _files.TryGetValue(fileName, out string? source)
            ? source
            : throw new ArgumentException($"no kernel file '{fileName}'; embedded: {string.Join(", ", _files.Keys)}", nameof(fileName));
    }

    /// <summary>The file that defines kernel <paramref name="kernelName"/>.</summary>
    /// <exception cref="ArgumentException">No embedded file defines it.</exception>
    public string FileOf(string kernelName)
    {
        ArgumentNullException.ThrowIfNull(kernelName);
        return _kernelFile.TryGetValue(kernelName, out string? file)
            ? file
            : throw new ArgumentException(
                $"no kernel '{kernelName}': no 'PHI2_KERNEL void {kernelName}(' in the {_files.Count} embedded kernel files ({string.Join(", ", _files.Keys)})",
                nameof(kernelName));
    }

    /// <summary>The entry points a source defines: each <c>PHI2_KERNEL void name(</c>, in order.</summary>
    public static IEnumerable<string> KernelNames(string source) =>
        KernelDeclaration().Matches(source).Select(m => m.Groups[1].Value);

    [GeneratedRegex(@"PHI2_KERNEL\s+void\s+(\w+)\s*\(")]
    private static partial Regex KernelDeclaration();

    private static bool IsPlainName(string name, string extension) =>
        name.EndsWith(extension, StringComparison.Ordinal) && name.Length > extension.Length &&
        name.IndexOfAny(['/', '\\']) < 0;

    private static KernelSourceCatalog LoadEmbedded()
    {
        var assembly = typeof(KernelSourceCatalog).Assembly;
        var files = new Dictionary<string, string>(StringComparer.Ordinal);
        var headers = new List<KernelHeader>();
        foreach (string resource in assembly.GetManifestResourceNames().Where(r => r.StartsWith(ResourcePrefix, StringComparison.Ordinal)))
        {
            string name = resource[ResourcePrefix.Length..];
            string text = ReadResource(assembly, resource);
            if (name.EndsWith(".cuh", StringComparison.Ordinal)) headers.Add(new KernelHeader(name, text));
            else files.Add(name, text);
        }
        if (files.Count == 0)
            throw new InvalidOperationException($"no kernel sources are embedded in {assembly.GetName().Name} (resources {ResourcePrefix}*.cu): the build is broken");
        return new KernelSourceCatalog(files, headers);
    }

    private static string ReadResource(Assembly assembly, string resource)
    {
        using var stream = assembly.GetManifestResourceStream(resource)!;
        using var reader = new StreamReader(stream, Encoding.UTF8, detectEncodingFromByteOrderMarks: true);
        return reader.ReadToEnd();
    }
}
