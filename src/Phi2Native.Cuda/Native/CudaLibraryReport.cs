using System.Text;

namespace Phi2Native.Cuda.Native;

/// <summary>
/// The report <see cref="CudaAvailability.DescribeLibraries"/> prints: where the resolver looked, the file it chose for
/// each CUDA library (or why none), and which cuEventElapsedTime exports the driver has. Written for the person who
/// must fix a machine after a failed first run, so every line says a file or a reason.
/// </summary>
internal static class CudaLibraryReport
{
    /// <summary>One library's line: its label ("NVRTC") and what the resolver did.</summary>
    internal sealed record Entry(string Label, NativeLibraryResolver.LoadOutcome Outcome, string? Version = null);

    /// <summary>Loads (once per process) and describes every CUDA library; never throws.</summary>
    internal static string Describe()
    {
        var env = ProbeEnvironment.Current();
        var driver = NativeLibraryResolver.Load(NativeLibraryResolver.Cuda);
        var nvrtc = NativeLibraryResolver.Load(NativeLibraryResolver.Nvrtc);
        var entries = new List<Entry>
        {
            new("libcuda", driver),
            new("NVRTC", nvrtc, nvrtc.Handle == 0 ? null : NvrtcVersion()),
            new("cuBLAS", NativeLibraryResolver.Load(NativeLibraryResolver.Cublas)),
            new("cuBLASLt", NativeLibraryResolver.Load(NativeLibraryResolver.CublasLt)),
        };
        (bool V2, bool V1)? exports = driver.Handle == 0
            ? null
            : (NativeLibraryResolver.HasExport(NativeLibraryResolver.Cuda, CudaDriver.EventElapsedTimeV2),
               NativeLibraryResolver.HasExport(NativeLibraryResolver.Cuda, CudaDriver.EventElapsedTimeV1));
        return Format(NativeLibraryResolver.PlacesLooked(env), entries, exports);
    }

    /// <summary>
    /// The report's text. <paramref name="placesLooked"/> heads it and stands for itself where a failure repeats it;
    /// <paramref name="elapsedTimeExports"/> is null when the driver did not load.
    /// </summary>
    internal static string Format(string placesLooked, IReadOnlyList<Entry> entries, (bool V2, bool V1)? elapsedTimeExports)
    {
        var text = new StringBuilder();
        text.Append("CUDA libraries (searched, in order: ").Append(placesLooked).AppendLine("):");
        int width = entries.Max(e => e.Label.Length) + 2;
        foreach (var entry in entries)
        {
            var o = entry.Outcome;
            text.Append("  ").Append((entry.Label + ":").PadRight(width));
            if (o.Handle == 0)
            {
                text.Append("not found: ").AppendLine((o.Failure ?? "no reason given").Replace(placesLooked, "the places above", StringComparison.Ordinal));
                continue;
            }
            text.Append(o.LoadedFrom);
            var notes = new List<string>();
            if (entry.Version is not null) notes.Add(entry.Version);
            if (o.FoundBy is not null) notes.Add($"through {o.FoundBy}");
            if (notes.Count > 0) text.Append(" (").Append(string.Join("; ", notes)).Append(')');
            text.AppendLine();
            if (o.Builtins is not null) text.Append("  ").Append("builtins:".PadRight(width)).AppendLine(o.Builtins);
        }
        if (elapsedTimeExports is { } x)
        {
            string? chosen = CudaDriver.ChooseElapsedTimeExport(name => name == CudaDriver.EventElapsedTimeV2 ? x.V2 : x.V1);
            text.Append("  libcuda exports ").Append(CudaDriver.EventElapsedTimeV2).Append(x.V2 ? ": yes, " : ": no, ")
                .Append(CudaDriver.EventElapsedTimeV1).Append(x.V1 ? ": yes" : ": no")
                .AppendLine(chosen is null ? "; event timing cannot work" : $"; event timing binds {chosen}");
        }
        return text.ToString().TrimEnd();
    }

    private static string? NvrtcVersion()
    {
        try
        {
            return Nvrtc.nvrtcVersion(out int major, out int minor) == NvrtcResult.Success ? $"NVRTC {major}.{minor}" : null;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return null; }
    }
}
