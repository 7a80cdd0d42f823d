namespace Phi2Native.GpuCheck;

/// <summary>
/// Where compute-sanitizer is: <c>$PHI2NATIVE_COMPUTE_SANITIZER</c> (a path, or "off"), else the first found in
/// <c>$PHI2NATIVE_CUDA_TOOLS/bin</c> (where CI unpacks the toolkit's tools), on PATH, in <c>$CUDA_HOME</c> or
/// <c>$CUDA_PATH</c>, in /usr/local/cuda*, or in a Python virtual environment's NVIDIA wheels (<c>$VIRTUAL_ENV</c>,
/// /opt/*/.venv: nvidia/*/bin, nvidia/cu13/bin, and the sanitizer wheel's own folder).
/// A pure function of the environment and the file view.
/// </summary>
internal static class SanitizerLocator
{
    /// <summary>The variable that names compute-sanitizer, or disables the stage with "off".</summary>
    public const string EnvironmentVariable = "PHI2NATIVE_COMPUTE_SANITIZER";

    /// <summary>The program's file name.</summary>
    public const string Program = "compute-sanitizer";

    /// <summary>The folders searched, in order, as patterns (see <see cref="ToolSearch.Expand"/>).</summary>
    public static IReadOnlyList<string> Folders(Func<string, string?> environment)
    {
        var folders = new List<string>();
        if (environment("PHI2NATIVE_CUDA_TOOLS") is { Length: > 0 } tools && Path.IsPathRooted(tools)) folders.Add(Path.Combine(tools, "bin"));
        folders.AddRange(ToolSearch.PathFolders(environment("PATH")));
        foreach (string variable in new[] { "CUDA_HOME", "CUDA_PATH" })
            if (environment(variable) is { Length: > 0 } root && Path.IsPathRooted(root))
                folders.AddRange([Path.Combine(root, "bin"), Path.Combine(root, "compute-sanitizer")]);
        folders.AddRange(["/usr/local/cuda/bin", "/usr/local/cuda-*/bin", "/usr/local/cuda/compute-sanitizer", "/usr/local/cuda-*/compute-sanitizer"]);
        var venvs = new List<string>();
        if (environment("VIRTUAL_ENV") is { Length: > 0 } venv && Path.IsPathRooted(venv)) venvs.Add(venv);
        venvs.Add("/opt/*/.venv");
        foreach (string v in venvs)
        {
            string nvidia = $"{v}/lib/python3*/site-packages/nvidia";
            folders.AddRange([$"{nvidia}/cu13/bin", $"{nvidia}/*/bin", $"{nvidia}/cu13/compute-sanitizer", $"{nvidia}/*/compute-sanitizer"]);
        }
        return folders;
    }

    /// <summary>The program's path, or null with <paramref name="reason"/> saying why the stage cannot run.</summary>
    public static string? Find(Func<string, string?> environment, IFileView files, out string reason)
    {
        string? named = environment(EnvironmentVariable)?.Trim();
        if (!string.IsNullOrEmpty(named))
        {
            if (named.ToLowerInvariant() is "off" or "0" or "none" or "false")
            {
                reason = $"{EnvironmentVariable}={named} turns it off";
                return null;
            }
            reason = files.IsFile(named) ? "" : $"{EnvironmentVariable}={named} is not a file";
            return reason.Length == 0 ? named : null;
        }
        var folders = Folders(environment);
        string? found = ToolSearch.Find(Program, folders, files);
        reason = found is null
            ? $"{Program} not found ($PHI2NATIVE_CUDA_TOOLS, PATH, $CUDA_HOME, $CUDA_PATH, /usr/local/cuda*, Python venvs' nvidia wheels; {EnvironmentVariable} names it)"
            : "";
        return found;
    }
}
