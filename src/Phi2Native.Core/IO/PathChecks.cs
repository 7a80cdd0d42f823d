namespace Phi2Native.IO;

/// <summary>What is wrong with a path given as a folder or a file, for messages that say so ("is a file, not a folder").</summary>
internal static class PathChecks
{
    /// <summary>Null when <paramref name="path"/> is a folder; else "is a file, not a folder" or "does not exist".</summary>
    public static string? FolderProblem(string path) =>
        Directory.Exists(path) ? null : File.Exists(path) ? "is a file, not a folder" : "does not exist";

    /// <summary>Null when <paramref name="path"/> is a file; else "is a folder, not a file" or "does not exist".</summary>
    public static string? FileProblem(string path) =>
        File.Exists(path) ? null : Directory.Exists(path) ? "is a folder, not a file" : "does not exist";
}
