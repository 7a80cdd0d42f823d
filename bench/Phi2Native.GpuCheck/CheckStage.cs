using System.Globalization;
using Phi2Native.Cuda;
using Phi2Native.DeviceChecks;

namespace Phi2Native.GpuCheck;

/// <summary>A family and the checks of it that --filter selected.</summary>
internal sealed record FamilySelection(DeviceCheckFamily Family, IReadOnlyList<DeviceCheck> Checks);

/// <summary>
/// The checks stage as the parent runs it: a child process per family (<see cref="ChildSupervisor"/>: a sticky fault,
/// a crash or a hang costs one check, and a fresh child goes on from the next), or everything in this process with
/// --in-process. The progress lines and the outcomes are the same either way.
/// </summary>
internal static class CheckStage
{
    /// <summary>The most one child may take: a family's checks take well under a second on a GPU, so this bounds a hang.</summary>
    public static readonly TimeSpan ChildTimeLimit = TimeSpan.FromSeconds(30);

    /// <summary>How long past its own limit a child may take to end the check it is in before it is killed.</summary>
    public static readonly TimeSpan Grace = TimeSpan.FromSeconds(5);

    /// <summary>The families with at least one check that <paramref name="filter"/> selects, in catalog order.</summary>
    public static IReadOnlyList<FamilySelection> Select(string? filter) =>
    [
        .. DeviceCheckCatalog.Families
            .Select(f => new FamilySelection(f, [.. f.Checks.Where(c => ChildMain.Matches(c, filter))]))
            .Where(s => s.Checks.Count > 0),
    ];

    /// <summary>Runs every selected check, a child per family; returns the outcomes in order and the stage's row.</summary>
    public static IReadOnlyList<CheckOutcome> RunInChildren(IReadOnlyList<FamilySelection> selection, RunnerOptions options, Deadline deadline,
        TextWriter output, out StageResult result)
    {
        var progress = new ConsoleProgress<CheckOutcome>(output, selection.Sum(s => s.Checks.Count), CheckRunner.Progress);
        var outcomes = new List<CheckOutcome>();
        int children = 0;
        foreach (var (family, checks) in selection)
        {
            progress.Offset = outcomes.Count;
            ChildLauncher launch = (from, limit, killAfter, stdout, stderr) =>
                ChildProcess.Run(ChildCommand.Self(ChildArguments(family.Name, options, from, limit)), killAfter, stdout, stderr);
            outcomes.AddRange(SupervisedCases.Run([.. checks.Select(c => c.Name)], launch, deadline, Grace, ChildTimeLimit,
                (i, r) => r.ToCheck(checks[i]), progress, out int started));
            children += started;
        }
        result = Result(outcomes, $"{children} child processes for {selection.Count} families");
        return outcomes;
    }

    /// <summary>Runs every selected check in this process on devices from <paramref name="acquire"/>.</summary>
    public static IReadOnlyList<CheckOutcome> RunInProcess(IReadOnlyList<DeviceCheck> checks, Func<IDeviceApi> acquire, Action<IDeviceApi> release,
        Deadline deadline, TextWriter output, out StageResult result)
    {
        var outcomes = CheckRunner.RunAll(checks, acquire, release, deadline, new ConsoleProgress<CheckOutcome>(output, checks.Count, CheckRunner.Progress));
        result = Result(outcomes, "in this process (--in-process)");
        return outcomes;
    }

    /// <summary>The hidden options that make a child run <paramref name="families"/> from <paramref name="from"/> within <paramref name="limit"/>.</summary>
    public static IEnumerable<string> ChildArguments(string families, RunnerOptions options, int from, TimeSpan limit)
    {
        string[] args = ["--child-checks", families, "--from", from.ToString(CultureInfo.InvariantCulture), "--time-limit", SupervisedCases.Seconds(limit)];
        if (options.Emulated) args = [.. args, "--emulated"];
        if (options.Filter is not null) args = [.. args, "--filter", options.Filter];
        return args;
    }

    /// <summary>The stage's row: checks, how many ran and failed, sticky faults and checks not run.</summary>
    public static StageResult Result(IReadOnlyList<CheckOutcome> outcomes, string how)
    {
        int ran = outcomes.Count(o => o.Status != CheckStatus.NotRun);
        int failed = outcomes.Count(o => o.Status is CheckStatus.Failed or CheckStatus.Threw);
        int faults = outcomes.Count(o => o.Fault is not null);
        string note = how;
        if (faults > 0) note += $"; {faults} sticky fault(s)";
        if (ran < outcomes.Count) note += $"; {outcomes.Count - ran} not run";
        return new StageResult(outcomes.Count, ran, failed, note);
    }
}
