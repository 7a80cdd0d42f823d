using System.Globalization;
using Phi2Native.Cuda;

namespace Phi2Native.GpuCheck;

/// <summary>
/// The benchmark stage as the parent runs it: the cases in a child process (a sticky fault, a crash or a hang costs
/// one case and a fresh child goes on from the next), or in this process on its device with --in-process.
/// </summary>
internal static class BenchStage
{
    /// <summary>How long past its own limit a child may take to end the case it is in (a model build, a few repetitions).</summary>
    public static readonly TimeSpan Grace = TimeSpan.FromSeconds(20);

    /// <summary>Runs the cases; <paramref name="inProcess"/> is the device to run them on here, or null for children.</summary>
    public static IReadOnlyList<BenchOutcome> Run(RunnerOptions options, string deviceName, IDeviceApi? inProcess, Deadline deadline, TextWriter output,
        out StageResult result)
    {
        var sizes = options.BenchSizes;
        var names = Benchmarks.CaseNames.ToList();
        output.WriteLine();
        output.WriteLine($"== benchmarks on {deviceName} at {sizes.Label} sizes (device-event time, median of up to {sizes.Reps} after " +
                         $"{Benchmarks.WarmUp} warm-up, {Deadline.Seconds(Benchmarks.PerCase)} s a case; {Deadline.Seconds(deadline.Remaining)} s for the stage) ==");
        var progress = new ConsoleProgress<BenchOutcome>(output, names.Count, Benchmarks.Progress);
        IReadOnlyList<BenchOutcome> outcomes;
        string how;
        if (inProcess is not null)
        {
            outcomes = Benchmarks.RunAll(inProcess, sizes, 0, deadline, progress);
            how = "in this process (--in-process)";
        }
        else
        {
            ChildLauncher launch = (from, limit, killAfter, stdout, stderr) =>
                ChildProcess.Run(ChildCommand.Self(ChildArguments(options, from, limit)), killAfter, stdout, stderr);
            outcomes = SupervisedCases.Run(names, launch, deadline, Grace, null, (_, r) => r.ToBench(), progress, out int children);
            how = $"{children} child process(es)";
        }
        int ran = outcomes.Count(o => o.Status != BenchStatus.NotRun);
        int faults = outcomes.Count(o => o.Fault is not null);
        string note = how + (faults > 0 ? $"; {faults} sticky fault(s)" : "") + (ran < outcomes.Count ? $"; {outcomes.Count - ran} not run" : "");
        result = new StageResult(outcomes.Count, ran, outcomes.Count(o => o.Status == BenchStatus.Threw), note);
        return outcomes;
    }

    /// <summary>The hidden options that make a child run the cases from <paramref name="from"/> within <paramref name="limit"/>.</summary>
    public static IEnumerable<string> ChildArguments(RunnerOptions options, int from, TimeSpan limit)
    {
        string[] args = ["--child-bench", "--from", from.ToString(CultureInfo.InvariantCulture), "--time-limit", SupervisedCases.Seconds(limit)];
        if (options.Emulated) args = [.. args, "--emulated"];
        if (options.BenchTiny) args = [.. args, "--bench-tiny"];
        return args;
    }
}
