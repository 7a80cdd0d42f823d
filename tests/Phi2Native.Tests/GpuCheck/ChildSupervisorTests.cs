using NUnit.Framework;
using Phi2Native.DeviceChecks;
using Phi2Native.GpuCheck;

namespace Phi2Native.Tests.GpuCheck;

/// <summary>
/// ChildSupervisor's bookkeeping with planted children (a launcher that plays back what a child would print and how
/// it would end): a sticky fault, a crash and a hang each cost one case, and a fresh child resumes after it. The
/// runner's --self-test runs the same with real child processes.
/// </summary>
[TestFixture]
public class ChildSupervisorTests
{
    private static readonly string[] Cases = ["a", "b", "c", "d"];

    /// <summary>What one planted child does: the records it prints (by case name), and how it ends.</summary>
    private sealed record PlantedChild(ChildRecord[] Records, ChildExit Exit);

    private sealed class Events : IChildEvents
    {
        public List<string> Log { get; } = [];

        public void Starting(int index, string name) => Log.Add($"start {name}");

        public void Finished(int index, ChildRecord record) => Log.Add($"end {record.Name} {record.Status}");

        public void Note(string line) => Log.Add($"note {line}");
    }

    private static ChildRecord End(string name, string status, string? fault = null, bool contextLost = false) =>
        new() { Event = "end", Name = name, Status = status, Fault = fault, ContextLost = contextLost };

    private static ChildExit Exited(int code) => new(code, false, TimeSpan.FromSeconds(1));

    private static (IReadOnlyList<ChildRecord> Records, List<int> Froms, int Children, Events Events) Supervise(Queue<PlantedChild> children,
        Deadline? deadline = null, TimeSpan? perChild = null, List<TimeSpan>? limits = null)
    {
        var froms = new List<int>();
        var events = new Events();
        ChildLauncher launch = (from, limit, killAfter, stdout, stderr) =>
        {
            froms.Add(from);
            limits?.Add(limit);
            var child = children.Dequeue();
            foreach (var record in child.Records) stdout(ChildProtocol.Encode(record));
            return child.Exit;
        };
        var records = ChildSupervisor.Run(Cases, launch, deadline ?? Deadline.After(TimeSpan.FromMinutes(1)), TimeSpan.FromSeconds(2), perChild, events, out int started);
        return (records, froms, started, events);
    }

    [Test]
    public void AStickyFaultACrashAndAHangEachCostOneCase()
    {
        var children = new Queue<PlantedChild>(
        [
            // a passes; b faults; the child marks c and d "context lost" and exits.
            new([ChildRecord.Start("a"), End("a", "Passed"), ChildRecord.Start("b"), End("b", "Threw", "CUDA_ERROR_ILLEGAL_ADDRESS"),
                End("c", "NotRun", contextLost: true), End("d", "NotRun", contextLost: true)], Exited(0)),
            // resumed at c: it crashes in c (killed by SIGSEGV).
            new([ChildRecord.Start("c")], Exited(128 + 11)),
            // resumed at d: it hangs in d and is killed.
            new([ChildRecord.Start("d")], new ChildExit(null, true, TimeSpan.FromSeconds(32))),
        ]);
        var (records, froms, started, events) = Supervise(children);
        Assert.That(froms, Is.EqualTo(new[] { 0, 2, 3 }));
        Assert.That(started, Is.EqualTo(3));
        Assert.That(records.Select(r => r.Status), Is.EqualTo(new[] { "Passed", "Threw", "Threw", "Threw" }));
        Assert.That(records[1].Fault, Is.EqualTo("CUDA_ERROR_ILLEGAL_ADDRESS"));
        Assert.That(records[2].Detail, Is.EqualTo("its child process was killed by SIGSEGV (signal 11) while running it"));
        Assert.That(records[3].Detail, Does.StartWith("its child process was killed after 32 s"));
        Assert.That(events.Log, Does.Contain("start c").And.Contain("end c NotRun").And.Contain("end c Threw"),
            "the context-lost record is shown, then replaced by the fresh child's outcome");
    }

    [Test]
    public void AChildThatDiesBeforeAnyCaseIsNotRestartedAndItsCasesFail()
    {
        var children = new Queue<PlantedChild>([new([], Exited(1)), new([], Exited(1))]);
        var (records, froms, started, _) = Supervise(children);
        Assert.That(started, Is.EqualTo(1), "no case further: no second child");
        Assert.That(froms, Is.EqualTo(new[] { 0 }));
        Assert.That(records, Has.All.Matches<ChildRecord>(r => r.Status == "Threw" && r.Detail == "its child process exited with status 1 before it ran a case"));
    }

    [Test]
    public void AChildThatSkipsItsFirstCaseIsNotRestartedForever()
    {
        // A broken child reports later cases but never the first it was given: restarting it would never end.
        var skipping = new PlantedChild([End("b", "Passed"), End("c", "Passed"), End("d", "Passed")], Exited(0));
        var (records, _, started, _) = Supervise(new Queue<PlantedChild>([skipping, skipping]));
        Assert.That(started, Is.EqualTo(1));
        Assert.That(records[0].Status, Is.EqualTo("Threw"));
        Assert.That(records[0].Detail, Is.EqualTo("its child process exited with status 0 without an outcome for 'a'"));
        Assert.That(records.Skip(1).Select(r => r.Status), Has.All.EqualTo("Passed"));
    }

    [Test]
    public void CasesTheDeadlineLeavesAreNotRunNotFailed()
    {
        var clock = new FakeClock();
        var deadline = new Deadline(clock, TimeSpan.FromSeconds(10), "the stage's 10 s were spent");
        var children = new Queue<PlantedChild>(
        [
            new([ChildRecord.Start("a"), End("a", "Passed")], Exited(128 + 6)), // aborts after a, before b
        ]);
        ChildLauncher launch = (from, limit, killAfter, stdout, stderr) =>
        {
            var child = children.Dequeue();
            foreach (var record in child.Records) stdout(ChildProtocol.Encode(record));
            clock.Advance(9); // the child took most of the stage
            return child.Exit;
        };
        var records = ChildSupervisor.Run(Cases, launch, deadline, TimeSpan.FromSeconds(2), null, new Events(), out int started);
        Assert.That(started, Is.EqualTo(1), "1 s left is less than the grace and a minimum child");
        Assert.That(records.Select(r => r.Status), Is.EqualTo(new[] { "Passed", "NotRun", "NotRun", "NotRun" }));
        Assert.That(records[1].Detail, Is.EqualTo("not run: the stage's 10 s were spent"));
    }

    [Test]
    public void AChildGetsThePerChildLimitOrWhatIsLeftLessTheGrace()
    {
        var limits = new List<TimeSpan>();
        var all = new[] { ChildRecord.Start("a"), End("a", "Passed"), End("b", "Passed"), End("c", "Passed"), End("d", "Passed") };
        Supervise(new Queue<PlantedChild>([new(all, Exited(0))]), perChild: TimeSpan.FromSeconds(30), limits: limits);
        Supervise(new Queue<PlantedChild>([new(all, Exited(0))]), Deadline.After(TimeSpan.FromSeconds(12)), TimeSpan.FromSeconds(30), limits);
        Assert.That(limits[0], Is.EqualTo(TimeSpan.FromSeconds(30)));
        Assert.That(limits[1].TotalSeconds, Is.InRange(9.0, 10.0), "12 s left less 2 s of grace");
    }

    [Test]
    public void StrayOutputAndUnknownCasesBecomeNotes()
    {
        var children = new Queue<PlantedChild>([new([ChildRecord.Start("a"), End("a", "Passed"), End("zz", "Passed"), End("b", "Passed"),
            End("c", "Passed"), End("d", "Passed")], Exited(0))]);
        var events = new Events();
        ChildLauncher launch = (from, limit, killAfter, stdout, stderr) =>
        {
            var child = children.Dequeue();
            stdout("========= COMPUTE-SANITIZER");
            foreach (var record in child.Records) stdout(ChildProtocol.Encode(record));
            stderr("phi2native: warning: planted");
            return child.Exit;
        };
        var records = ChildSupervisor.Run(Cases, launch, Deadline.After(TimeSpan.FromMinutes(1)), TimeSpan.FromSeconds(2), null, events, out _);
        Assert.That(records, Has.All.Matches<ChildRecord>(r => r.Status == "Passed"));
        Assert.That(events.Log, Does.Contain("note ========= COMPUTE-SANITIZER").And.Contain("note phi2native: warning: planted"));
        Assert.That(events.Log, Has.Some.Contains("'zz'"));
    }

    [Test]
    public void RecordsSurviveTheirLineWithInfinitiesAndTextBeforeThem()
    {
        var check = new DeviceCheck("y check", ["k"], _ => throw new InvalidOperationException());
        var outcome = new CheckOutcome(check, CheckStatus.Failed, new CheckResult(double.PositiveInfinity, double.PositiveInfinity, "y[3] = NaN"),
            TimeSpan.FromMilliseconds(1.5), "y[3] = NaN") { Fault = "CUDA_ERROR_ILLEGAL_ADDRESS" };
        var (record, text) = ChildProtocol.Decode("native noise" + ChildProtocol.Encode(ChildRecord.Of(outcome, "trace")));
        Assert.That(text, Is.EqualTo("native noise"));
        var back = record!.ToCheck(check);
        Assert.That(back.Status, Is.EqualTo(CheckStatus.Failed));
        Assert.That(back.Result!.WorstRatio, Is.EqualTo(double.PositiveInfinity));
        Assert.That(back.Time, Is.EqualTo(TimeSpan.FromMilliseconds(1.5)));
        Assert.That(back.Fault, Is.EqualTo("CUDA_ERROR_ILLEGAL_ADDRESS"));
        Assert.That(record.Trace, Is.EqualTo("trace"));

        var bench = new BenchOutcome("case", "[2, 3]", "bf16", BenchStatus.Ran, 1.25, double.PositiveInfinity, "TFLOP/s", 10, "") { WallSeconds = 0.5 };
        var benchBack = ChildProtocol.Decode(ChildProtocol.Encode(ChildRecord.Of(bench, null))).Record!.ToBench();
        Assert.That(benchBack, Is.EqualTo(bench));

        Assert.That(ChildProtocol.Decode("plain line"), Is.EqualTo(((ChildRecord?)null, "plain line")));
        Assert.That(ChildProtocol.Decode(ChildProtocol.Prefix + "{not json").Record, Is.Null);
    }

    [Test]
    public void HowAChildEndedIsDescribed()
    {
        Assert.That(new ChildExit(0, false, TimeSpan.Zero).Clean, Is.True);
        Assert.That(new ChildExit(3, false, TimeSpan.Zero).Describe(), Is.EqualTo("exited with status 3"));
        Assert.That(new ChildExit(134, false, TimeSpan.Zero).Describe(), Is.EqualTo("was killed by SIGABRT (signal 6)"));
        Assert.That(new ChildExit(null, true, TimeSpan.FromSeconds(35)).Describe(), Does.StartWith("was killed after 35 s"));
        Assert.That(new ChildExit(null, false, TimeSpan.Zero, "No such file").Describe(), Is.EqualTo("could not be started: No such file"));
    }
}
