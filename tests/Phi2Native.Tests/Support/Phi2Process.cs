using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using NUnit.Framework;

namespace Phi2Native.Tests.Support;

/// <summary>
/// The `phi2` command line as a child process (the test binary folder's phi2.dll under `dotnet`), for what only a real
/// process shows: signals and their exit codes, an OS file lock released when a process dies. Its standard output and
/// error are collected as they come; disposing it kills the process if it still runs.
/// </summary>
internal sealed partial class Phi2Process : IDisposable
{
    public const int SIGKILL = 9, SIGINT = 2, SIGTERM = 15;

    private readonly Process _process;
    private readonly StringBuilder _output = new(), _error = new();

    private Phi2Process(Process process) => _process = process;

    /// <summary>Starts `phi2 <paramref name="args"/>` in <paramref name="workingDirectory"/>.</summary>
    public static Phi2Process Start(string workingDirectory, params string[] args)
    {
        var start = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = workingDirectory, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "phi2.dll"));
        foreach (var arg in args) start.ArgumentList.Add(arg);
        var process = new Process { StartInfo = start };
        var child = new Phi2Process(process);
        process.OutputDataReceived += (_, e) => { lock (child._output) if (e.Data != null) child._output.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { lock (child._error) if (e.Data != null) child._error.AppendLine(e.Data); };
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return child;
    }

    public int Id => _process.Id;

    public string Output { get { lock (_output) return _output.ToString(); } }

    public string Error { get { lock (_error) return _error.ToString(); } }

    /// <summary>Waits until <paramref name="condition"/> holds, failing the test (with what the process said) after <paramref name="seconds"/> or if it exits first.</summary>
    public void WaitUntil(Func<bool> condition, string what, double seconds = 120)
    {
        var clock = Stopwatch.StartNew();
        while (!condition())
        {
            if (_process.HasExited) Assert.Fail($"phi2 exited (code {_process.ExitCode}) before {what}\n{Output}\n{Error}");
            if (clock.Elapsed.TotalSeconds > seconds) Assert.Fail($"no {what} after {seconds} s\n{Output}\n{Error}");
            Thread.Sleep(20);
        }
    }

    /// <summary>Sends <paramref name="signal"/> to the process.</summary>
    public void Signal(int signal)
    {
        if (Kill(_process.Id, signal) != 0) Assert.Fail($"kill({_process.Id}, {signal}) failed: errno {Marshal.GetLastPInvokeError()}");
    }

    /// <summary>Waits for the process to end and returns its exit code.</summary>
    public int WaitForExit(double seconds = 120)
    {
        if (!_process.WaitForExit(TimeSpan.FromSeconds(seconds))) Assert.Fail($"phi2 still running after {seconds} s\n{Output}\n{Error}");
        _process.WaitForExit();   // drains the redirected streams
        return _process.ExitCode;
    }

    public void Dispose()
    {
        try
        {
            if (!_process.HasExited) _process.Kill(entireProcessTree: true);
        }
        catch (InvalidOperationException)
        {
        }
        _process.Dispose();
    }

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);
}
