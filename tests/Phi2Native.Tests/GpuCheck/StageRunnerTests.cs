using System.Text.RegularExpressions;
using NUnit.Framework;
using Phi2Native.GpuCheck;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.GpuCheck;

/// <summary>The GPU runner's stage budgets (Stages, StageRunner), with planted slow stages on a fake clock.</summary>
[TestFixture]
public class StageRunnerTests
{
    private static readonly Stage Ten = new("ten", TimeSpan.FromSeconds(10));
    private static readonly Stage Twenty = new("twenty", TimeSpan.FromSeconds(20));

    /// <summary>A planted stage of <paramref name="cases"/> cases of <paramref name="seconds"/> each, started while its deadline allows.</summary>
    private static Func<Deadline, StageResult> SlowCases(FakeClock clock, int cases, double seconds) => deadline =>
    {
        int ran = 0;
        for (int i = 0; i < cases; i++)
        {
            if (deadline.IsPast) continue;
            clock.Advance(seconds);
            ran++;
        }
        return new StageResult(cases, ran, 0, ran < cases ? $"{cases - ran} not run: {deadline.Why}" : "");
    };

    [Test]
    public void ASlowStageIsCutOffAtItsBudgetAndItsRestIsNotRunNotFailed()
    {
        var clock = new FakeClock();
        var runner = new StageRunner(clock, TimeSpan.FromSeconds(100));
        var report = runner.Run(Ten, SlowCases(clock, 5, 4), TextWriter.Null);
        // Cases start at 0, 4 and 8 s; at 12 s the 10 s budget is spent.
        Assert.That(report.Result.Ran, Is.EqualTo(3));
        Assert.That(report.Status, Is.EqualTo(StageStatus.CutOff));
        Assert.That(report.Result.Note, Does.Contain("the stage's 10 s were spent"));
        Assert.That(report.Used, Is.EqualTo(TimeSpan.FromSeconds(12)));
        Assert.That(runner.AnyFailed, Is.False);
    }

    [Test]
    public void AStageThatFitsItsBudgetPasses()
    {
        var clock = new FakeClock();
        var runner = new StageRunner(clock, TimeSpan.FromSeconds(100));
        var report = runner.Run(Ten, SlowCases(clock, 3, 3), TextWriter.Null);
        Assert.That(report.Status, Is.EqualTo(StageStatus.Passed));
        Assert.That(report.Result.Ran, Is.EqualTo(3));
    }

    [Test]
    public void TheRunsLimitCutsAStageShorterThanItsBudget()
    {
        var clock = new FakeClock();
        var runner = new StageRunner(clock, TimeSpan.FromSeconds(15));
        runner.Run(Ten, SlowCases(clock, 5, 4), TextWriter.Null); // ends at 12 s
        Deadline? seen = null;
        var report = runner.Run(Twenty, d =>
        {
            seen = d;
            return SlowCases(clock, 5, 1)(d);
        }, TextWriter.Null);
        Assert.That(seen!.At, Is.EqualTo(TimeSpan.FromSeconds(15)), "the run's limit, not 12 + 20 s");
        Assert.That(seen.Why, Is.EqualTo("the run's 15 s were spent"));
        Assert.That(report.Result.Ran, Is.EqualTo(3));
        Assert.That(report.Status, Is.EqualTo(StageStatus.CutOff));
    }

    [Test]
    public void AStageThatFindsTheRunSpentDoesNotStart()
    {
        var clock = new FakeClock();
        var runner = new StageRunner(clock, TimeSpan.FromSeconds(10));
        clock.Advance(10);
        bool called = false;
        var report = runner.Run(Ten, _ =>
        {
            called = true;
            return new StageResult(1, 1, 0);
        }, TextWriter.Null);
        Assert.That(called, Is.False);
        Assert.That(report.Status, Is.EqualTo(StageStatus.NotRun));
        Assert.That(report.Result.Note, Is.EqualTo("the run's 10 s were spent"));
    }

    [Test]
    public void AThrowingStageFailsAndTheNextStillRuns()
    {
        var clock = new FakeClock();
        var runner = new StageRunner(clock, TimeSpan.FromSeconds(100));
        var log = new StringWriter();
        var failed = runner.Run(Ten, _ => throw new InvalidOperationException("planted"), log);
        var next = runner.Run(Twenty, SlowCases(clock, 2, 1), log);
        Assert.That(failed.Status, Is.EqualTo(StageStatus.Failed));
        Assert.That(failed.Result.Note, Does.Contain("InvalidOperationException: planted"));
        Assert.That(log.ToString(), Does.Contain("the ten stage failed"));
        Assert.That(next.Status, Is.EqualTo(StageStatus.Passed));
        Assert.That(runner.AnyFailed, Is.True);
    }

    [Test]
    public void AStageThatOverrunsItsDeadlineSaysBySoMuch()
    {
        var clock = new FakeClock();
        var runner = new StageRunner(clock, TimeSpan.FromSeconds(100));
        // One case started in time and ran 15 s: nothing interrupts a started case in process.
        var report = runner.Run(Ten, SlowCases(clock, 1, 15), TextWriter.Null);
        Assert.That(report.Status, Is.EqualTo(StageStatus.Passed));
        Assert.That(report.Result.Note, Does.Contain("overran its deadline by 5.0 s").Or.Contain("overran its deadline by 5 s"));
    }

    [Test]
    public void StatusOfAResult()
    {
        Assert.That(StageRunner.StatusOf(new StageResult(3, 3, 0)), Is.EqualTo(StageStatus.Passed));
        Assert.That(StageRunner.StatusOf(new StageResult(3, 2, 0)), Is.EqualTo(StageStatus.CutOff));
        Assert.That(StageRunner.StatusOf(new StageResult(3, 2, 1)), Is.EqualTo(StageStatus.Failed), "a failure outweighs a cut-off");
        Assert.That(StageRunner.StatusOf(StageResult.NotRun("no tool")), Is.EqualTo(StageStatus.NotRun));
        Assert.That(StageRunner.StatusOf(new StageResult(0, 0, 0)), Is.EqualTo(StageStatus.Passed));
    }

    [Test]
    public void EveryStageOfTheTableKeepsToItsBudgetWhenEachIsPlantedSlow()
    {
        var clock = new FakeClock();
        var runner = new StageRunner(clock, RunnerOptions.DefaultTimeLimit);
        var starts = new List<(Stage Stage, TimeSpan Start, TimeSpan Deadline)>();
        foreach (var stage in Stages.All)
        {
            runner.Run(stage, d =>
            {
                starts.Add((stage, clock.Elapsed, d.At));
                return SlowCases(clock, 1000, 1)(d); // never ends by itself
            }, TextWriter.Null);
        }
        Assert.That(runner.Reports.Select(r => r.Stage), Is.EqualTo(Stages.All));
        foreach (var (stage, start, deadline) in starts)
        {
            var expected = start + stage.Budget < RunnerOptions.DefaultTimeLimit ? start + stage.Budget : RunnerOptions.DefaultTimeLimit;
            Assert.That(deadline, Is.EqualTo(expected), stage.Name);
        }
        Assert.That(runner.Reports, Has.All.Matches<StageReport>(r => r.Status == StageStatus.CutOff));
        Assert.That(clock.Elapsed, Is.LessThanOrEqualTo(RunnerOptions.DefaultTimeLimit + TimeSpan.FromSeconds(1)));
        var table = new StringWriter();
        runner.WriteTable(table, markdown: false);
        foreach (var stage in Stages.All) Assert.That(table.ToString(), Does.Contain(stage.Name));
        Assert.That(table.ToString(), Does.Contain("CUT OFF"));
    }

    [Test]
    public void TheStageTableAddsUpTo340SecondsAndTheRunnerKeepsItsReserveInside()
    {
        Assert.That(Stages.All.Select(s => (s.Name, s.Budget.TotalSeconds)), Is.EqualTo(new[]
        {
            ("probe and compile", 30.0), ("checks", 90.0), ("compute-sanitizer", 60.0), ("benchmarks", 100.0), ("peers", 60.0),
        }));
        Assert.That(Stages.Total, Is.EqualTo(TimeSpan.FromSeconds(340)));
        Assert.That(RunnerOptions.DefaultTimeLimit, Is.EqualTo(Stages.Total - Stages.Reserve));
    }

    [Test]
    public void GpuCheckShsOuterTimeoutIsTheStageTablesTotal()
    {
        string script = File.ReadAllText(Path.Combine(Fixtures.RepositoryRoot, "bench", "gpu-check.sh"));
        var m = Regex.Match(script, @"^total_budget=(\d+)\b", RegexOptions.Multiline);
        Assert.That(m.Success, "bench/gpu-check.sh sets total_budget=SECONDS");
        Assert.That(double.Parse(m.Groups[1].Value), Is.EqualTo(Stages.Total.TotalSeconds), "bench/gpu-check.sh's total_budget must equal Stages.Total");
        var reserve = Regex.Match(script, @"^reserve=(\d+)\b", RegexOptions.Multiline);
        Assert.That(reserve.Success && double.Parse(reserve.Groups[1].Value) == Stages.Reserve.TotalSeconds, "bench/gpu-check.sh's reserve must equal Stages.Reserve");
    }
}
