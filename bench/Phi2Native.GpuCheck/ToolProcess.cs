using System.Diagnostics;

namespace Phi2Native.GpuCheck;

/// <summary>Runs a command-line tool (cuobjdump) to completion and hands back what it printed.</summary>
internal static class ToolProcess
{
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
