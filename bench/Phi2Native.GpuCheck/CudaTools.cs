using System.Diagnostics;

namespace Phi2Native.GpuCheck;

/// <summary>
/// Finds the CUDA toolkit's command-line tools (cuobjdump, compute-sanitizer) wherever a machine has them:
/// <c>$PHI2NATIVE_CUDA_TOOLS/bin</c> (what .ci/cuda-tools.sh unpacks), the PATH, <c>$CUDA_HOME/bin</c>,
/// <c>$CUDA_PATH/bin</c>, <c>/usr/local/cuda/bin</c>. None of them is needed to run the engine.
/// </summary>
internal static class CudaTools
{
    /// <summary>The full path of <paramref name="tool"/>, or null when no folder has it.</summary>
    public static string? Find(string tool)
    {
        var folders = new List<string>();
        void Add(string? folder) { if (!string.IsNullOrWhiteSpace(folder)) folders.Add(folder); }
        Add(Environment.GetEnvironmentVariable("PHI2NATIVE_CUDA_TOOLS") is { Length: > 0 } tools ? Path.Combine(tools, "bin") : null);
        foreach (string folder in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':')) Add(folder);
        Add(Environment.GetEnvironmentVariable("CUDA_HOME") is { Length: > 0 } home ? Path.Combine(home, "bin") : null);
        Add(Environment.GetEnvironmentVariable("CUDA_PATH") is { Length: > 0 } path ? Path.Combine(path, "bin") : null);
        Add("/usr/local/cuda/bin");
        return folders.Select(f => Path.Combine(f, tool)).FirstOrDefault(File.Exists);
    }

    /// <summary>Runs <paramref name="path"/> with <paramref name="arguments"/>; returns its standard output.</summary>
    /// <exception cref="InvalidOperationException">It exited with a non-zero code (the message holds its standard error).</exception>
    public static string Run(string path, params string[] arguments)
    {
        var start = new ProcessStartInfo(path) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string argument in arguments) start.ArgumentList.Add(argument);
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"{path} did not start");
        var error = process.StandardError.ReadToEndAsync();
        string output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0)
            throw new InvalidOperationException($"{Path.GetFileName(path)} {string.Join(' ', arguments)} exited with {process.ExitCode}: {error.Result.Trim()}");
        return output;
    }
}
