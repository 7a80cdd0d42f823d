using System.Globalization;
using System.Runtime.InteropServices;

namespace Phi2Native.Cuda.Native;

/// <summary>
/// Which file the dynamic loader mapped for a library it found by soname, read from <c>/proc/self/maps</c>: the file
/// whose mapping holds one of the library's exports. A soname alone does not say which of several copies on the
/// loader's paths was taken, and the kernel cache and the probe's report need the file itself.
/// </summary>
internal static class MappedFiles
{
    /// <summary>The file that holds <paramref name="export"/> of the library <paramref name="handle"/>, or null where it cannot be told.</summary>
    internal static string? FileOf(nint handle, string export)
    {
        if (handle == 0 || !NativeLibrary.TryGetExport(handle, export, out nint address)) return null;
        try
        {
            return File.Exists("/proc/self/maps") ? FileContaining(File.ReadLines("/proc/self/maps"), (ulong)address) : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }

    /// <summary>
    /// The path of the mapping that holds <paramref name="address"/> in <c>/proc/PID/maps</c> lines
    /// (<c>start-end perms offset dev inode path</c>), or null when none does or it maps no file.
    /// </summary>
    internal static string? FileContaining(IEnumerable<string> mapsLines, ulong address)
    {
        foreach (string line in mapsLines)
        {
            string[] fields = line.Split(' ', 6, StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length < 6) continue;
            int dash = fields[0].IndexOf('-');
            if (dash < 0
                || !ulong.TryParse(fields[0].AsSpan(0, dash), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out ulong start)
                || !ulong.TryParse(fields[0].AsSpan(dash + 1), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out ulong end))
                continue;
            if (address < start || address >= end) continue;
            string path = fields[5].Trim();
            return path.StartsWith('/') ? path : null;
        }
        return null;
    }
}
