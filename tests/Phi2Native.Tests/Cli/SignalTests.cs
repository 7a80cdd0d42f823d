using NUnit.Framework;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Cli;

/// <summary>
/// `phi2 finetune` as a real process receiving real signals: SIGTERM and SIGINT finish the step, write a checkpoint and
/// exit 143 and 130 saying so, and the run resumes from it exactly (bit for bit on the CPU); a run killed with SIGKILL
/// leaves its folder free for the next (the OS drops its lock).
/// </summary>
[TestFixture, NonParallelizable]
public class SignalTests : TemporaryDirectoryTest
{
    private const int Steps = 60;

    private string[] Args(string data, string run, int maxSteps) =>
        ["finetune", "--data", data, "--out", run, "--max-steps", maxSteps.ToString(), "--epochs", "100", .. RunFiles.Fast];

    // Started with many more steps than the reference takes, and stopped after a few (constant rate: the step count changes no step).
    private (int Code, Phi2Process Process) StopAfterSomeSteps(string data, string run, int signal)
    {
        var child = Phi2Process.Start(Temp, Args(data, run, 100_000));
        string metrics = Path.Combine(run, "metrics.jsonl");
        child.WaitUntil(() => File.Exists(metrics) && File.ReadAllLines(metrics).Length >= 2, "two training steps");
        child.Signal(signal);
        return (child.WaitForExit(), child);
    }

    [Test]
    public void SigtermWritesACheckpointExits143AndTheRunResumesBitForBit()
    {
        string data = RunFiles.Data(Temp), run = Path.Combine(Temp, "run"), whole = Path.Combine(Temp, "whole");
        var (code, child) = StopAfterSomeSteps(data, run, Phi2Process.SIGTERM);
        using (child)
        {
            Assert.That(code, Is.EqualTo(143), child.Error);
            Assert.That(child.Output, Does.Contain("stopped by SIGTERM at step").And.Contain("after writing a checkpoint"));
        }
        int stoppedAt = RunFiles.CheckpointSteps(run).Single();
        Assert.That(stoppedAt, Is.InRange(2, Steps - 1), "stopped mid-run");
        Assert.That(File.Exists(Path.Combine(run, "checkpoints", $"step-{stoppedAt}", "manifest.json")), Is.True);
        Assert.That(RunFiles.Losses(run).Select(l => l.Step), Is.EqualTo(Enumerable.Range(1, stoppedAt)), "the step in flight finished and was logged");

        Assert.That(Phi2(Args(data, whole, Steps)).Code, Is.EqualTo(0));
        var (resumed, _, error) = Phi2([.. Args(data, run, Steps), "--resume", Path.Combine(run, "checkpoints", $"step-{stoppedAt}")]);
        Assert.That(resumed, Is.EqualTo(0), error);
        Assert.That(RunFiles.Losses(run), Is.EqualTo(RunFiles.Losses(whole)), "the stopped and resumed run is the uninterrupted one");
        Assert.That(RunFiles.AdapterBytes(run), Is.EqualTo(RunFiles.AdapterBytes(whole)));
    }

    [Test]
    public void SigintWritesACheckpointAndExits130()
    {
        string run = Path.Combine(Temp, "run");
        var (code, child) = StopAfterSomeSteps(RunFiles.Data(Temp), run, Phi2Process.SIGINT);
        using (child)
        {
            Assert.That(code, Is.EqualTo(130), child.Error);
            Assert.That(child.Output, Does.Contain("stopped by SIGINT at step"));
            Assert.That(child.Error, Does.Contain("SIGINT: finishing the step and writing a checkpoint"));
        }
        Assert.That(RunFiles.CheckpointSteps(run), Has.Length.EqualTo(1));
    }

    [Test]
    public void ALiveRunHoldsItsFolder_AndAKilledOneNeverBlocksTheNext()
    {
        string data = RunFiles.Data(Temp), run = Path.Combine(Temp, "run");
        using var child = Phi2Process.Start(Temp, Args(data, run, 100_000));
        string metrics = Path.Combine(run, "metrics.jsonl");
        child.WaitUntil(() => File.Exists(metrics) && File.ReadAllLines(metrics).Length >= 1, "a training step");

        var (code, _, error) = Phi2(Args(data, run, 2));
        Assert.That(code, Is.EqualTo(2), error);
        Assert.That(error, Does.Contain("is in use by another fine-tuning run"));

        child.Signal(Phi2Process.SIGKILL);
        Assert.That(child.WaitForExit(), Is.EqualTo(137));
        (code, _, error) = Phi2([.. Args(data, run, 2), "--overwrite"]);
        Assert.That(code, Is.EqualTo(0), error);
    }
}
