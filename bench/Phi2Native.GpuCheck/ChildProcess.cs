using System.ComponentModel;
using System.Diagnostics;
using System.Globalization;

namespace Phi2Native.GpuCheck;

/// <summary>How a child process ended.</summary>
/// <param name="ExitCode">Its exit status (128 + N when signal N ended it), or null when it never started.</param>
/// <param name="Killed">True when it outlived its time and was killed.</param>
/// <param name="Elapsed">Wall time from start to end.</param>
/// <param name="StartError">Why it could not be started, or null.</param>
internal sealed record ChildExit(int? ExitCode, bool Killed, TimeSpan Elapsed, string? StartError = null)
{
    /// <summary>True when it exited by itself with status 0.</summary>
    public bool Clean => ExitCode == 0 && !Killed;

    /// <summary>"exited with status 3", "was killed by SIGSEGV (signal 11)", "was killed after 30 s", "could not be started: ...".</summary>
    public string Describe()
    {
        if (StartError is not null) return $"could not be started: {StartError}";
        if (Killed) return $"was killed after {Deadline.Seconds(Elapsed)} s (it outlived its time: a hang?)";
        return ExitCode is > 128 and < 160
            ? $"was killed by {SignalName(ExitCode.Value - 128)} (signal {ExitCode.Value - 128})"
            : $"exited with status {ExitCode?.ToString(CultureInfo.InvariantCulture) ?? "?"}";
    }

    private static string SignalName(int signal) => signal switch
    {
        4 => "SIGILL", 6 => "SIGABRT", 7 => "SIGBUS", 8 => "SIGFPE", 9 => "SIGKILL", 11 => "SIGSEGV", 15 => "SIGTERM",
        _ => "a signal",
    };
}

/// <summary>What to start: a program and its arguments.</summary>
internal sealed record ChildCommand(string FileName, IReadOnlyList<string> Arguments)
{
    /// <summary>The folder it runs in; null: this process's.</summary>
    public string? WorkingDirectory { get; init; }

    /// <summary>
    /// This runner itself with <paramref name="arguments"/>: the published program, or `dotnet Phi2Native.GpuCheck.dll`
    /// when it was started through dotnet.
    /// </summary>
    public static ChildCommand Self(IEnumerable<string> arguments)
    {
        string process = Environment.ProcessPath ?? throw new InvalidOperationException("this process's executable is unknown");
        bool viaDotnet = Path.GetFileNameWithoutExtension(process).Equals("dotnet", StringComparison.OrdinalIgnoreCase);
        return viaDotnet
            ? new ChildCommand(process, [typeof(ChildCommand).Assembly.Location, .. arguments])
            : new ChildCommand(process, [.. arguments]);
    }

    /// <summary>The same command run under <paramref name="wrapper"/> and its arguments (compute-sanitizer).</summary>
    public ChildCommand Under(string wrapper, params string[] wrapperArguments) =>
        new(wrapper, [.. wrapperArguments, FileName, .. Arguments]) { WorkingDirectory = WorkingDirectory };

    /// <summary>The command as a shell would show it.</summary>
    public override string ToString() => string.Join(" ", new[] { FileName }.Concat(Arguments).Select(a => a.Contains(' ') ? $"'{a}'" : a));
}

/// <summary>Starts a child process, hands over its output line by line, and kills it (and its children) when it overruns.</summary>
internal static class ChildProcess
{
    /// <summary>How long the output of a killed child may take to drain before the parent stops waiting for it.</summary>
    private static readonly TimeSpan Drain = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Runs <paramref name="command"/>, passing each line of its standard output to <paramref name="stdout"/> and of
    /// its standard error to <paramref name="stderr"/> (never both at once), and kills its process tree after
    /// <paramref name="killAfter"/>. Never throws for the child's sake: a start failure is in the result.
    /// </summary>
    public static ChildExit Run(ChildCommand command, TimeSpan killAfter, Action<string> stdout, Action<string> stderr)
    {
        var info = new ProcessStartInfo(command.FileName)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true, // a child must never wait for the terminal
            UseShellExecute = false,
        };
        if (command.WorkingDirectory is not null) info.WorkingDirectory = command.WorkingDirectory;
        foreach (string a in command.Arguments) info.ArgumentList.Add(a);
        var gate = new object();
        bool closed = false; // set when the parent stops listening: a line that comes later is dropped
        var watch = Stopwatch.StartNew();
        using var process = new Process { StartInfo = info };
        process.OutputDataReceived += (_, e) => { lock (gate) if (e.Data is not null && !closed) stdout(e.Data); };
        process.ErrorDataReceived += (_, e) => { lock (gate) if (e.Data is not null && !closed) stderr(e.Data); };
        try
        {
            process.Start();
        }
        catch (Exception e) when (e is Win32Exception or InvalidOperationException or IOException)
        {
            return new ChildExit(null, false, watch.Elapsed, e.Message);
        }
        process.StandardInput.Close();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        // WaitForExitAsync also waits for both streams to reach their end, so every line is handed over.
        bool finished = WaitForExitAndOutput(process, killAfter);
        var elapsed = watch.Elapsed;
        bool killed = false;
        if (!finished && !process.HasExited)
        {
            killed = true;
            try
            {
                process.Kill(entireProcessTree: true);
            }
            catch (Exception e) when (e is InvalidOperationException or Win32Exception)
            {
                // It ended between the wait and the kill.
            }
        }
        // Bounded: a grandchild that outlived the kill could hold the output open.
        if (!finished) WaitForExitAndOutput(process, Drain);
        lock (gate) closed = true;
        int? code = process.HasExited ? process.ExitCode : null;
        return new ChildExit(code, killed, elapsed);
    }

    private static bool WaitForExitAndOutput(Process process, TimeSpan limit)
    {
        using var timeout = new CancellationTokenSource(limit);
        try
        {
            process.WaitForExitAsync(timeout.Token).GetAwaiter().GetResult();
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }
}
