using System.Text.RegularExpressions;
using Phi2Native.Cuda;

namespace Phi2Native.GpuCheck;

/// <summary>
/// Which kernel file defines each entry point, read from the kernel sources: a check names its kernels
/// (<c>add_f32</c>), NVRTC reports per file (<c>elementwise.cu</c>), and the final table joins the two. The sources
/// are the ones embedded in Phi2Native for NVRTC when there are any, else the repository's <c>kernels/</c> folder
/// found above this program (bench/gpu-runner lives inside the repository).
/// </summary>
internal sealed partial class KernelIndex
{
    private readonly Dictionary<string, string> _fileOf;

    private KernelIndex(Dictionary<string, string> fileOf, string source)
    {
        _fileOf = fileOf;
        Source = source;
    }

    /// <summary>Where the sources were read from, for the log.</summary>
    public string Source { get; }

    /// <summary>Whether any kernel source was found.</summary>
    public bool IsEmpty => _fileOf.Count == 0;

    /// <summary>The file defining <paramref name="kernel"/>, or null (a cuBLAS entry point, or sources not found).</summary>
    public string? FileOf(string kernel) => _fileOf.GetValueOrDefault(kernel);

    // PHI2_KERNEL is common.cuh's `extern "C" __global__`; both spellings, with optional launch bounds.
    [GeneratedRegex("""(?:PHI2_KERNEL|extern\s+"C"\s+__global__)\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?void\s+(\w+)\s*\(""")]
    private static partial Regex EntryPoint();

    /// <summary>Reads the kernel sources; never throws (an index with nothing in it says where it looked).</summary>
    public static KernelIndex Load()
    {
        try
        {
            var embedded = typeof(IDeviceApi).Assembly;
            var resources = embedded.GetManifestResourceNames().Where(n => n.EndsWith(".cu", StringComparison.Ordinal)).ToList();
            if (resources.Count > 0)
            {
                var files = resources.Select(name =>
                {
                    using var reader = new StreamReader(embedded.GetManifestResourceStream(name)!);
                    // "Phi2Native.Kernels.layernorm.cu" -> "layernorm.cu"
                    string[] parts = name.Split('.');
                    return (File: $"{parts[^2]}.cu", Text: reader.ReadToEnd());
                });
                return Build(files, $"{resources.Count} kernel file(s) embedded in {embedded.GetName().Name}");
            }
            foreach (string start in new[] { AppContext.BaseDirectory, Environment.CurrentDirectory })
            {
                for (var directory = new DirectoryInfo(start); directory is not null; directory = directory.Parent)
                {
                    string kernels = Path.Combine(directory.FullName, "kernels");
                    if (!File.Exists(Path.Combine(kernels, "common.cuh"))) continue;
                    var paths = Directory.GetFiles(kernels, "*.cu").Order(StringComparer.Ordinal).ToList();
                    return Build(paths.Select(p => (Path.GetFileName(p), File.ReadAllText(p))), $"{paths.Count} kernel file(s) in {kernels}");
                }
            }
            return new KernelIndex([], "no kernel sources found (none embedded, no kernels/ folder above this program)");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return new KernelIndex([], $"kernel sources unreadable: {e.Message}");
        }
    }

    /// <summary>An index over the given (file name, source text) pairs; <paramref name="source"/> says where they came from.</summary>
    public static KernelIndex Build(IEnumerable<(string File, string Text)> files, string source)
    {
        var fileOf = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (file, text) in files)
            foreach (Match m in EntryPoint().Matches(text))
                fileOf.TryAdd(m.Groups[1].Value, file);
        return new KernelIndex(fileOf, $"{source} ({fileOf.Count} entry points)");
    }
}
