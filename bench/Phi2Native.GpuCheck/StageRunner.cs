using System.Globalization;

namespace Phi2Native.GpuCheck;

/// <summary>How a stage ended.</summary>
internal enum StageStatus
{
    /// <summary>Every case ran and none failed.</summary>
    Passed,
    /// <summary>A case failed, or the stage itself threw.</summary>
    Failed,
    /// <summary>Nothing failed, but the budget ran out: the remaining cases are NOT RUN.</summary>
    CutOff,
    /// <summary>The stage did not run: not asked for, nothing to run it with (a tool is missing), or no time was left.</summary>
    NotRun,
}

/// <summary>What a stage's body reports: how many cases it had, ran and failed, and a note for the stage table.</summary>
/// <param name="Cases">Cases the stage had (checks, kernel files, sanitizer runs, scripts).</param>
/// <param name="Ran">Cases that started.</param>
/// <param name="Failed">Cases that failed or threw.</param>
/// <param name="Note">One short line for the table ("40 not run: the stage's 60 s were spent"), or "".</param>
internal sealed record StageResult(int Cases, int Ran, int Failed, string Note = "")
{
    /// <summary>The stage did not run, and why (not a failure).</summary>
    public static StageResult NotRun(string reason) => new(0, 0, 0, reason) { Skipped = true };

    /// <summary>True for <see cref="NotRun"/>.</summary>
    public bool Skipped { get; private init; }
}

/// <summary>One row of the stage table.</summary>
internal sealed record StageReport(Stage Stage, StageStatus Status, TimeSpan Used, StageResult Result);

/// <summary>
/// Runs the stages of <see cref="Stages"/> one after another, each within its budget and all within the run's limit:
/// a stage's body gets a <see cref="Deadline"/> (its budget, or what is left of the run, whichever ends first) and
/// must start no case after it; a stage that finds no time left does not start. A body that throws fails its stage
/// and the next still runs. The table it prints says, per stage, the budget, the time used and how it ended.
/// </summary>
internal sealed class StageRunner(IRunClock clock, TimeSpan runLimit)
{
    private readonly List<StageReport> _reports = [];

    /// <summary>The stages run (or skipped) so far, in order.</summary>
    public IReadOnlyList<StageReport> Reports => _reports;

    /// <summary>True when a stage failed.</summary>
    public bool AnyFailed => _reports.Any(r => r.Status == StageStatus.Failed);

    /// <summary>Runs <paramref name="body"/> as <paramref name="stage"/> and records its row; never throws.</summary>
    /// <param name="output">Where a stage that throws or finds no time says so.</param>
    public StageReport Run(Stage stage, Func<Deadline, StageResult> body, TextWriter output)
    {
        var start = clock.Elapsed;
        if (start >= runLimit)
        {
            string why = $"the run's {Deadline.Seconds(runLimit)} s were spent";
            output.WriteLine($"{stage.Name}: not run ({why})");
            return Add(new StageReport(stage, StageStatus.NotRun, TimeSpan.Zero, StageResult.NotRun(why)));
        }
        var stageEnd = start + stage.Budget;
        var deadline = stageEnd <= runLimit
            ? new Deadline(clock, stageEnd, $"the stage's {Deadline.Seconds(stage.Budget)} s were spent")
            : new Deadline(clock, runLimit, $"the run's {Deadline.Seconds(runLimit)} s were spent");
        StageResult result;
        try
        {
            result = body(deadline);
        }
        catch (Exception e)
        {
            output.WriteLine($"error: the {stage.Name} stage failed: {e}");
            result = new StageResult(0, 0, 1, $"the stage threw {e.GetType().Name}: {FirstLine(e.Message)}");
        }
        var used = clock.Elapsed - start;
        // A case already running when the deadline came is not interrupted (children are killed by their supervisor
        // instead), so a stage may end a little late; the table says by how much.
        if (used > deadline.At - start + TimeSpan.FromSeconds(1))
            result = result with { Note = Join(result.Note, $"overran its deadline by {Deadline.Seconds(used - (deadline.At - start))} s") };
        return Add(new StageReport(stage, StatusOf(result), used, result));
    }

    /// <summary>Records <paramref name="stage"/> as not run for <paramref name="reason"/> (an option left it out).</summary>
    public StageReport Skip(Stage stage, string reason) =>
        Add(new StageReport(stage, StageStatus.NotRun, TimeSpan.Zero, StageResult.NotRun(reason)));

    /// <summary>The status a body's result earns: failed cases fail it; cases left unrun cut it off.</summary>
    public static StageStatus StatusOf(StageResult result) =>
        result.Skipped ? StageStatus.NotRun
        : result.Failed > 0 ? StageStatus.Failed
        : result.Ran < result.Cases ? StageStatus.CutOff
        : StageStatus.Passed;

    /// <summary>The word the stage table uses for <paramref name="status"/>.</summary>
    public static string Describe(StageStatus status) => status switch
    {
        StageStatus.Passed => "pass",
        StageStatus.Failed => "FAIL",
        StageStatus.CutOff => "CUT OFF",
        _ => "NOT RUN",
    };

    /// <summary>The stage table: stage, budget, seconds used, cases ran of all, result, note; then the run's total.</summary>
    public void WriteTable(TextWriter output, bool markdown)
    {
        var table = new TextTable("stage", "budget s", "used s", "cases", "result", "note");
        foreach (var r in _reports)
        {
            table.Add(r.Stage.Name, Deadline.Seconds(r.Stage.Budget), Format.Seconds(r.Used.TotalSeconds),
                r.Result.Skipped ? "-" : $"{r.Result.Ran.ToString(CultureInfo.InvariantCulture)}/{r.Result.Cases.ToString(CultureInfo.InvariantCulture)}",
                Describe(r.Status), r.Result.Note);
        }
        table.Write(output, markdown);
        output.WriteLine($"stages took {Format.Seconds(_reports.Sum(r => r.Used.TotalSeconds))} s of the run's limit of {Deadline.Seconds(runLimit)} s " +
                         $"(the budgets add up to {Deadline.Seconds(Stages.Total)} s)");
    }

    private StageReport Add(StageReport report)
    {
        _reports.Add(report);
        return report;
    }

    private static string Join(string a, string b) => a.Length == 0 ? b : $"{a}; {b}";

    private static string FirstLine(string text)
    {
        int end = text.IndexOfAny(['\r', '\n']);
        return end < 0 ? text : text[..end];
    }
}
