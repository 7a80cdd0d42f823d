using System.Globalization;

namespace Phi2Native.GpuCheck;

/// <summary>One peer script's run.</summary>
internal sealed record PeerRun(string Script, ChildExit? Exit, string Detail)
{
    /// <summary>It ran and exited 0.</summary>
    public bool Passed => Exit?.Clean ?? false;
}

/// <summary>
/// The peers stage: the same work in peer frameworks on the same machine, for comparison (bench/peers/gpu_peers.py:
/// PyTorch's attention, HF transformers and PEFT). It runs each bench/peers/*.py with the machine's Python
/// (<c>$PHI2NATIVE_PEERS_PYTHON</c>, else /opt/torch/.venv/bin/python3) from the repository root, one after another
/// within the budget, with the arguments the run gives them (<c>--ours FILE</c>: the benchmark stage's results,
/// <see cref="BenchResultsFile"/>; <c>--dry-run</c> on the emulator); NOT RUN "no peer script yet" when there is none.
/// </summary>
internal static class PeersStage
{
    /// <summary>The variable that names the Python to run the scripts with.</summary>
    public const string PythonVariable = "PHI2NATIVE_PEERS_PYTHON";

    /// <summary>The GPU image's Python, whose virtual environment has torch.</summary>
    public const string DefaultPython = "/opt/torch/.venv/bin/python3";

    /// <summary>
    /// The repository the runner belongs to: the first folder above the program (bench/gpu-runner/, or a build
    /// output) that holds bench/gpu-check.sh, else the current folder (bench/gpu-check.sh runs it from the root).
    /// </summary>
    public static string Repository()
    {
        for (var folder = new DirectoryInfo(AppContext.BaseDirectory); folder is not null; folder = folder.Parent)
            if (File.Exists(Path.Combine(folder.FullName, "bench", "gpu-check.sh"))) return folder.FullName;
        return Directory.GetCurrentDirectory();
    }

    /// <summary>The scripts, in name order, in <paramref name="repository"/>/bench/peers.</summary>
    public static IReadOnlyList<string> Scripts(string repository)
    {
        string folder = Path.Combine(repository, "bench", "peers");
        return Directory.Exists(folder) ? [.. Directory.GetFiles(folder, "*.py").OrderBy(f => f, StringComparer.Ordinal)] : [];
    }

    /// <summary>
    /// The stage as a run has it, after the benchmark stage: each script gets <c>--ours FILE</c> with
    /// <paramref name="bench"/> (when the benchmarks ran) and, with <paramref name="dryRun"/> (the emulator), <c>--dry-run</c>.
    /// </summary>
    public static StageResult RunAfter(IReadOnlyList<BenchOutcome>? bench, string device, BenchSizes sizes, bool dryRun, Deadline deadline, TextWriter output)
    {
        output.WriteLine();
        output.WriteLine("== peers ==");
        string? ours = bench is null ? null : BenchResultsFile.Write(device, sizes, bench);
        try
        {
            List<string> arguments = ours is null ? [] : ["--ours", ours];
            if (dryRun) arguments.Add("--dry-run");
            Run(Repository(), Environment.GetEnvironmentVariable, deadline, output, out var result, arguments);
            if (result.Skipped) output.WriteLine($"peers: not run: {result.Note}");
            return result;
        }
        finally
        {
            if (ours is not null) File.Delete(ours);
        }
    }

    /// <summary>Runs the scripts; returns their runs (none when the stage could not run, with <paramref name="result"/> saying why).</summary>
    /// <param name="arguments">Passed to each script after its path.</param>
    public static IReadOnlyList<PeerRun> Run(string repository, Func<string, string?> environment, Deadline deadline, TextWriter output, out StageResult result,
        IReadOnlyList<string>? arguments = null)
    {
        var scripts = Scripts(repository);
        if (scripts.Count == 0)
        {
            result = StageResult.NotRun("no peer script yet (bench/peers/*.py)");
            return [];
        }
        string python = environment(PythonVariable) is { Length: > 0 } named ? named : DefaultPython;
        if (!File.Exists(python))
        {
            result = StageResult.NotRun($"no Python at {python} ({PythonVariable} names another)");
            return [];
        }
        var runs = new List<PeerRun>();
        foreach (string script in scripts)
        {
            string name = Path.GetRelativePath(repository, script);
            if (deadline.Remaining < TimeSpan.FromSeconds(1))
            {
                runs.Add(new PeerRun(name, null, $"not run: {deadline.Why}"));
                output.WriteLine($"{name}: not run ({deadline.Why})");
                continue;
            }
            output.WriteLine($"-- {string.Join(' ', [python, name, .. arguments ?? []])} --");
            var exit = ChildProcess.Run(new ChildCommand(python, [script, .. arguments ?? []]) { WorkingDirectory = repository }, deadline.Remaining, output.WriteLine, output.WriteLine);
            // Killed at the deadline is the budget's doing: cut off, like a case that never started, not failed.
            string detail = exit.Clean ? $"exited 0 in {Format.Seconds(exit.Elapsed.TotalSeconds)} s"
                : exit.Killed ? $"cut off: killed after {Deadline.Seconds(exit.Elapsed)} s, when {deadline.Why}"
                : $"it {exit.Describe()}";
            runs.Add(new PeerRun(name, exit.Killed ? null : exit, detail));
            output.WriteLine($"{name}: {(exit.Clean ? "pass" : exit.Killed ? "CUT OFF" : "FAIL")}: {detail}");
        }
        int finished = runs.Count(r => r.Exit is not null);
        result = new StageResult(runs.Count, finished, runs.Count(r => r.Exit is not null && !r.Passed),
            $"{finished.ToString(CultureInfo.InvariantCulture)} of {runs.Count.ToString(CultureInfo.InvariantCulture)} script(s) finished, with {python}");
        return runs;
    }
}
