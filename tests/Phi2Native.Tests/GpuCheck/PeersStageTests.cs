using NUnit.Framework;
using Phi2Native.GpuCheck;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.GpuCheck;

/// <summary>The peers stage: bench/peers/*.py with the machine's Python and the run's arguments, or NOT RUN saying why.</summary>
[TestFixture]
public class PeersStageTests : TemporaryDirectoryTest
{
    private static Func<string, string?> Python(string? path) => name => name == PeersStage.PythonVariable ? path : null;

    private StageResult Run(Func<string, string?> environment, double seconds, out string log, IReadOnlyList<string>? arguments = null)
    {
        var output = new StringWriter();
        PeersStage.Run(Temp, environment, Deadline.After(TimeSpan.FromSeconds(seconds)), output, out var result, arguments);
        log = output.ToString();
        return result;
    }

    private void Script(string name, string text)
    {
        Directory.CreateDirectory(Path.Combine(Temp, "bench", "peers"));
        File.WriteAllText(Path.Combine(Temp, "bench", "peers", name), text);
    }

    [Test]
    public void WithoutAScriptTheStageIsNotRun()
    {
        var result = Run(Python("/bin/sh"), 10, out _);
        Assert.That(StageRunner.StatusOf(result), Is.EqualTo(StageStatus.NotRun));
        Assert.That(result.Note, Does.StartWith("no peer script yet"));
    }

    [Test]
    public void WithoutThePythonTheStageIsNotRun()
    {
        Script("peer.py", "exit 0\n");
        var result = Run(Python(Path.Combine(Temp, "no-python")), 10, out _);
        Assert.That(StageRunner.StatusOf(result), Is.EqualTo(StageStatus.NotRun));
        Assert.That(result.Note, Does.StartWith("no Python at"));
    }

    [Test]
    public void EachScriptRunsFromTheRepositoryAndAFailingOneFailsTheStage()
    {
        // /bin/sh stands in for Python: the stage only runs "PYTHON script" and reads the exit status.
        Script("a_ok.py", "pwd\nexit 0\n");
        Script("b_fails.py", "echo planted failure\nexit 3\n");
        var result = Run(Python("/bin/sh"), 30, out string log);
        Assert.That(result.Cases, Is.EqualTo(2));
        Assert.That(result.Ran, Is.EqualTo(2));
        Assert.That(result.Failed, Is.EqualTo(1));
        Assert.That(StageRunner.StatusOf(result), Is.EqualTo(StageStatus.Failed));
        Assert.That(log, Does.Contain(Temp).And.Contain("planted failure").And.Contain("exited with status 3"));
    }

    [Test]
    public void AScriptThatOutlivesTheBudgetIsCutOffNotFailed()
    {
        Script("slow.py", "sleep 30\n");
        var result = Run(Python("/bin/sh"), 2, out string log);
        Assert.That(StageRunner.StatusOf(result), Is.EqualTo(StageStatus.CutOff), result.Note);
        Assert.That(log, Does.Contain("CUT OFF"));
    }

    [Test]
    public void EachScriptGetsTheRunsArguments()
    {
        Script("echo_args.py", "echo \"arguments: $*\"\nexit 0\n");
        var result = Run(Python("/bin/sh"), 30, out string log, ["--ours", "/tmp/ours.json", "--dry-run"]);
        Assert.That(StageRunner.StatusOf(result), Is.EqualTo(StageStatus.Passed), log);
        Assert.That(log, Does.Contain("arguments: --ours /tmp/ours.json --dry-run"));
    }
}
