namespace Phi2Native.GpuCheck;

/// <summary>
/// Where the CUDA toolkit's programs (compute-sanitizer, cuobjdump) are, on whatever machine the runner was carried
/// to: <c>$PHI2NATIVE_CUDA_TOOLS</c> (what .ci/cuda-tools.sh unpacks), PATH, <c>$CUDA_HOME</c> or <c>$CUDA_PATH</c>,
/// /usr/local/cuda*, a Python virtual environment's NVIDIA wheels (<c>$VIRTUAL_ENV</c>, /opt/*/.venv: nvidia/*/bin,
/// nvidia/cu13/bin, and the sanitizer wheel's own folder), and last the copy <c>bench/gpu-check.sh --build</c>
/// carries beside the runner (<c>cuda-tools/</c>), so a machine's own toolkit wins over the one we bring.
/// compute-sanitizer may also be named, or turned off, by <c>$PHI2NATIVE_COMPUTE_SANITIZER</c>.
/// A pure function of the environment, the runner's folder and the file view.
/// </summary>
internal static class CudaToolLocator
{
    /// <summary>The variable that names compute-sanitizer, or disables its stage with "off".</summary>
    public const string SanitizerVariable = "PHI2NATIVE_COMPUTE_SANITIZER";

    /// <summary>compute-sanitizer's file name.</summary>
    public const string Sanitizer = "compute-sanitizer";

    /// <summary>cuobjdump's file name.</summary>
    public const string Cuobjdump = "cuobjdump";

    /// <summary>The folder beside the runner that bench/gpu-check.sh --build fills with the tools CI unpacked.</summary>
    public const string CarriedFolder = "cuda-tools";

    /// <summary>The folders searched, in order, as patterns (see <see cref="ToolSearch.Expand"/>).</summary>
    public static IReadOnlyList<string> Folders(Func<string, string?> environment, string runnerFolder)
    {
        var folders = new List<string>();
        void AddToolkit(string root) => folders.AddRange([Path.Combine(root, "bin"), Path.Combine(root, Sanitizer)]);
        if (environment("PHI2NATIVE_CUDA_TOOLS") is { Length: > 0 } tools && Path.IsPathRooted(tools)) AddToolkit(tools);
        folders.AddRange(ToolSearch.PathFolders(environment("PATH")));
        foreach (string variable in new[] { "CUDA_HOME", "CUDA_PATH" })
            if (environment(variable) is { Length: > 0 } root && Path.IsPathRooted(root)) AddToolkit(root);
        folders.AddRange(["/usr/local/cuda/bin", "/usr/local/cuda-*/bin", "/usr/local/cuda/compute-sanitizer", "/usr/local/cuda-*/compute-sanitizer"]);
        var venvs = new List<string>();
        if (environment("VIRTUAL_ENV") is { Length: > 0 } venv && Path.IsPathRooted(venv)) venvs.Add(venv);
        venvs.Add("/opt/*/.venv");
        foreach (string v in venvs)
        {
            string nvidia = $"{v}/lib/python3*/site-packages/nvidia";
            folders.AddRange([$"{nvidia}/cu13/bin", $"{nvidia}/*/bin", $"{nvidia}/cu13/compute-sanitizer", $"{nvidia}/*/compute-sanitizer"]);
        }
        if (Path.IsPathRooted(runnerFolder)) AddToolkit(Path.Combine(runnerFolder, CarriedFolder));
        return folders;
    }

    /// <summary>The first <paramref name="program"/> in <see cref="Folders"/>, or null.</summary>
    public static string? Find(string program, Func<string, string?> environment, string runnerFolder, IFileView files) =>
        ToolSearch.Find(program, Folders(environment, runnerFolder), files);

    /// <summary>The first <paramref name="program"/> on this machine, from the runner's own folder.</summary>
    public static string? Find(string program) =>
        Find(program, Environment.GetEnvironmentVariable, AppContext.BaseDirectory, new RealFiles());

    /// <summary>compute-sanitizer's path, or null with <paramref name="reason"/> saying why its stage cannot run.</summary>
    public static string? FindSanitizer(Func<string, string?> environment, string runnerFolder, IFileView files, out string reason)
    {
        string? named = environment(SanitizerVariable)?.Trim();
        if (!string.IsNullOrEmpty(named))
        {
            if (named.ToLowerInvariant() is "off" or "0" or "none" or "false")
            {
                reason = $"{SanitizerVariable}={named} turns it off";
                return null;
            }
            reason = files.IsFile(named) ? "" : $"{SanitizerVariable}={named} is not a file";
            return reason.Length == 0 ? named : null;
        }
        string? found = Find(Sanitizer, environment, runnerFolder, files);
        reason = found is null
            ? $"{Sanitizer} not found ($PHI2NATIVE_CUDA_TOOLS, PATH, $CUDA_HOME, $CUDA_PATH, /usr/local/cuda*, Python venvs' nvidia wheels, " +
              $"the runner's {CarriedFolder}/; {SanitizerVariable} names it)"
            : "";
        return found;
    }
}
