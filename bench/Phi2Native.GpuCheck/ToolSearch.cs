using System.Text.RegularExpressions;

namespace Phi2Native.GpuCheck;

/// <summary>What the tool search sees of the file system; tests give it a fake tree.</summary>
internal interface IFileView
{
    /// <summary>Whether <paramref name="path"/> is a file.</summary>
    bool IsFile(string path);

    /// <summary>The full paths of the folders directly inside <paramref name="folder"/> (none when it is not one).</summary>
    IEnumerable<string> Folders(string folder);
}

/// <summary>The machine's file system.</summary>
internal sealed class RealFiles : IFileView
{
    /// <inheritdoc/>
    public bool IsFile(string path) => File.Exists(path);

    /// <inheritdoc/>
    public IEnumerable<string> Folders(string folder)
    {
        try
        {
            return Directory.Exists(folder) ? Directory.GetDirectories(folder) : [];
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return [];
        }
    }
}

/// <summary>Finds a program among places written as patterns ("/opt/*/.venv/lib/python3*/site-packages/nvidia/*/bin").</summary>
internal static class ToolSearch
{
    /// <summary>
    /// The folders <paramref name="pattern"/> names: an absolute path whose segments may hold '*' (any characters,
    /// within one segment). Folders a '*' matches come in descending ordinal order (cuda-13.0 before cuda-12.4).
    /// </summary>
    public static IEnumerable<string> Expand(string pattern, IFileView files)
    {
        var segments = pattern.Split('/', StringSplitOptions.RemoveEmptyEntries);
        IEnumerable<string> current = ["/"];
        foreach (string segment in segments)
        {
            if (!segment.Contains('*'))
            {
                current = current.Select(c => Path.Combine(c, segment));
                continue;
            }
            var match = new Regex("^" + Regex.Escape(segment).Replace("\\*", ".*", StringComparison.Ordinal) + "$", RegexOptions.CultureInvariant);
            current = current.SelectMany(c => files.Folders(c)
                .Where(f => match.IsMatch(Path.GetFileName(f)))
                .OrderByDescending(f => f, StringComparer.Ordinal)).ToList();
        }
        return current;
    }

    /// <summary>The first <paramref name="program"/> inside the folders of <paramref name="patterns"/>, in order, or null.</summary>
    public static string? Find(string program, IEnumerable<string> patterns, IFileView files) =>
        patterns.SelectMany(p => Expand(p, files)).Select(f => Path.Combine(f, program)).FirstOrDefault(files.IsFile);

    /// <summary>The folders of a PATH-like variable's value.</summary>
    public static IEnumerable<string> PathFolders(string? value) =>
        (value ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries).Where(Path.IsPathRooted);
}
