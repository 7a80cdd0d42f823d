using NUnit.Framework;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Cli;

/// <summary>
/// `phi2 finetune --out`: one run per folder (a live run's lock refuses a second), a new run never mixes with another
/// run's checkpoints unless --overwrite clears them, a resume in the run's own folder keeps one history, leftovers of a
/// killed checkpoint write are cleaned, and --keep-checkpoints, --save-every-minutes and the checkpoint manifest.
/// </summary>
[TestFixture]
public class RunFolderTests : TemporaryDirectoryTest
{
    private string Run => Path.Combine(Temp, "run");

    private (int Code, string Output, string Error) Finetune(params string[] extra) =>
        Phi2(["finetune", "--data", RunFiles.Data(Temp), "--out", Run, .. RunFiles.Fast, .. extra]);

    [Test]
    public void ANewRunIntoAFolderWithAnotherRunsCheckpointsIsRefused_AndOverwriteClearsThemFirst()
    {
        Assert.That(Finetune("--max-steps", "4", "--save-every", "2").Code, Is.EqualTo(0));
        Assert.That(RunFiles.CheckpointSteps(Run), Is.EqualTo(new[] { 2, 4 }));
        var before = File.ReadAllText(Path.Combine(Run, "metrics.jsonl"));

        var (code, _, error) = Finetune("--max-steps", "3");
        Assert.That(code, Is.EqualTo(2), error);
        Assert.That(error, Does.Contain("holds another run's checkpoints").And.Contain("--overwrite").And.Contain("--resume"));
        Assert.That(RunFiles.CheckpointSteps(Run), Is.EqualTo(new[] { 2, 4 }), "nothing of the old run was touched");
        Assert.That(File.ReadAllText(Path.Combine(Run, "metrics.jsonl")), Is.EqualTo(before));

        (code, _, error) = Finetune("--max-steps", "3", "--overwrite");
        Assert.That(code, Is.EqualTo(0), error);
        Assert.That(error, Does.Contain("--overwrite: removed the previous run's checkpoints"));
        Assert.That(RunFiles.CheckpointSteps(Run), Is.EqualTo(new[] { 3 }), "only the new run's checkpoint");
        Assert.That(RunFiles.Losses(Run).Select(l => l.Step), Is.EqualTo(new[] { 1, 2, 3 }), "only the new run's metrics");
    }

    [Test]
    public void AFolderThatALiveRunHoldsIsRefused()
    {
        Directory.CreateDirectory(Run);
        // What a live run holds: the lock file, opened exclusively (the OS drops it when that process dies).
        using (new FileStream(Path.Combine(Run, ".phi2-finetune.lock"), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None))
        {
            var (code, output, error) = Finetune("--max-steps", "2");
            Assert.That(code, Is.EqualTo(2), error);
            Assert.That(error, Does.Contain($"--out '{Run}' is in use by another fine-tuning run"));
            Assert.That(output, Does.Not.Contain("done"));
            Assert.That(File.Exists(Path.Combine(Run, "metrics.jsonl")), Is.False, "nothing written");
        }
        Assert.That(Finetune("--max-steps", "2").Code, Is.EqualTo(0), "free once the holder is gone");
    }

    [Test]
    public void AResumeInTheRunsOwnFolderKeepsOneHistory()
    {
        string whole = Path.Combine(Temp, "whole");
        string data = RunFiles.Data(Temp);
        string[] common = ["finetune", "--data", data, "--val", data, "--eval-every", "3", "--max-steps", "6", "--save-every", "2", .. RunFiles.Fast];
        Assert.That(Phi2([.. common, "--out", whole]).Code, Is.EqualTo(0));
        Assert.That(Phi2([.. common, "--out", Run]).Code, Is.EqualTo(0));

        // Resuming from step 2 abandons steps 3..6: their checkpoints and the whole old metrics move aside, once.
        var (code, _, error) = Phi2([.. common, "--out", Run, "--resume", Path.Combine(Run, "checkpoints", "step-2")]);
        Assert.That(code, Is.EqualTo(0), error);
        Assert.That(RunFiles.Losses(Run).Select(l => l.Step), Is.EqualTo(new[] { 1, 2, 3, 4, 5, 6 }), "each step once, in order");
        Assert.That(RunFiles.Losses(Run), Is.EqualTo(RunFiles.Losses(whole)), "the one history is the uninterrupted run's, bit for bit");
        Assert.That(Validations(Run), Is.EqualTo(Validations(whole)).And.EqualTo(new[] { 0, 3, 6 }.Select(step => (step, Validations(whole).Single(v => v.Step == step).Loss))),
            "each validation once: at the start, at step 3, at the end");
        var abandoned = Directory.GetDirectories(Path.Combine(Run, "checkpoints"), "abandoned-*");
        Assert.That(abandoned, Has.Length.EqualTo(1), error);
        Assert.That(Directory.GetDirectories(abandoned[0]).Select(Path.GetFileName).Order(), Is.EqualTo(new[] { "step-4", "step-6" }));
        Assert.That(File.ReadAllLines(Path.Combine(abandoned[0], "metrics.jsonl")), Has.Length.EqualTo(File.ReadAllLines(Path.Combine(whole, "metrics.jsonl")).Length),
            "the abandoned history's metrics are kept beside it, whole");
        Assert.That(RunFiles.CheckpointSteps(Run), Is.EqualTo(new[] { 2, 4, 6 }), "the newest checkpoints are this history's");
        Assert.That(RunFiles.AdapterBytes(Run), Is.EqualTo(RunFiles.AdapterBytes(whole)));
        Assert.That(error, Does.Contain("moved to").And.Contain("abandoned-"));

        // Resuming from the final checkpoint trains nothing and repeats nothing.
        var before = File.ReadAllLines(Path.Combine(Run, "metrics.jsonl"));
        Assert.That(Phi2([.. common, "--out", Run, "--resume", Path.Combine(Run, "checkpoints", "step-6")]).Code, Is.EqualTo(0));
        Assert.That(File.ReadAllLines(Path.Combine(Run, "metrics.jsonl")), Is.EqualTo(before));
    }

    private static List<(int Step, double Loss)> Validations(string run) =>
        RunFiles.Metrics(run).Where(m => m.TryGetProperty("validation_loss", out _))
            .Select(m => (m.GetProperty("Step").GetInt32(), m.GetProperty("validation_loss").GetDouble())).ToList();

    [Test]
    public void ResumingFromTheFoldersOwnCheckpointWithOverwriteIsRefused()
    {
        Assert.That(Finetune("--max-steps", "2", "--save-every", "1").Code, Is.EqualTo(0));
        var (code, _, error) = Finetune("--max-steps", "2", "--resume", Path.Combine(Run, "checkpoints", "step-1"), "--overwrite");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error, Does.Contain("--overwrite would delete the checkpoints --resume"));
        Assert.That(RunFiles.CheckpointSteps(Run), Is.EqualTo(new[] { 1, 2 }));
    }

    [Test]
    public void CheckpointFoldersAKilledWriteLeftAreCleanedOnTheNextStart()
    {
        Assert.That(Finetune("--max-steps", "2", "--save-every", "1").Code, Is.EqualTo(0));
        string checkpoints = Path.Combine(Run, "checkpoints");
        // A write killed before its rename, and one killed between moving the old step-1 aside and renaming the new one in.
        Directory.CreateDirectory(Path.Combine(checkpoints, ".step-3.tmp-0123456789abcdef"));
        File.WriteAllText(Path.Combine(checkpoints, ".step-3.tmp-0123456789abcdef", "optimizer.safetensors"), "half");
        Directory.Move(Path.Combine(checkpoints, "step-1"), Path.Combine(checkpoints, "step-1.old-fedcba9876543210"));

        var (code, _, error) = Finetune("--max-steps", "3", "--resume", Path.Combine(checkpoints, "step-2"));
        Assert.That(code, Is.EqualTo(0), error);
        Assert.That(Directory.GetDirectories(checkpoints).Select(Path.GetFileName).Order(), Is.EqualTo(new[] { "step-1", "step-2", "step-3" }));
        Assert.That(error, Does.Contain("a checkpoint whose writing was cut off").And.Contain("whose replacement was cut off"));
    }

    [Test]
    public void KeepCheckpointsBoundsWhatIsKept()
    {
        var (code, _, error) = Finetune("--max-steps", "5", "--save-every", "1", "--keep-checkpoints", "2");
        Assert.That(code, Is.EqualTo(0), error);
        Assert.That(RunFiles.CheckpointSteps(Run), Is.EqualTo(new[] { 4, 5 }));
        Assert.That(Finetune("--max-steps", "1", "--keep-checkpoints", "0", "--overwrite").Error, Does.Contain("--keep-checkpoints must be at least 1"));
        Assert.That(Finetune("--max-steps", "1", "--metrics-every", "0", "--overwrite").Error, Does.Contain("--metrics-every must be at least 1"));
    }

    [Test]
    public void SaveEveryMinutesCheckpointsByTime()
    {
        // A period shorter than any step: every step is due. Without it, only the final checkpoint is written.
        var (code, _, error) = Finetune("--max-steps", "3", "--save-every-minutes", "1e-9");
        Assert.That(code, Is.EqualTo(0), error);
        Assert.That(RunFiles.CheckpointSteps(Run), Is.EqualTo(new[] { 1, 2, 3 }));
        Assert.That(Finetune("--max-steps", "3", "--save-every-minutes", "600", "--overwrite").Code, Is.EqualTo(0));
        Assert.That(RunFiles.CheckpointSteps(Run), Is.EqualTo(new[] { 3 }));
        Assert.That(Finetune("--max-steps", "1", "--save-every-minutes", "-1", "--overwrite").Error, Does.Contain("--save-every-minutes must be a finite number >= 0"));
    }

    [TestCase("optimizer.safetensors", "its SHA-256 differs")]
    [TestCase("trainer_state.json", "bytes, but the checkpoint's manifest.json says")]
    [TestCase("adapter_model.safetensors", "missing from the checkpoint")]
    public void ADamagedCheckpointIsRefusedNamingTheFile(string file, string what)
    {
        Assert.That(Finetune("--max-steps", "2", "--save-every", "1").Code, Is.EqualTo(0));
        string checkpoint = Path.Combine(Run, "checkpoints", "step-1"), path = Path.Combine(checkpoint, file);
        Assert.That(File.Exists(Path.Combine(checkpoint, "manifest.json")), Is.True);
        if (what.StartsWith("missing", StringComparison.Ordinal)) File.Delete(path);
        else if (what.StartsWith("its SHA", StringComparison.Ordinal))
        {
            var bytes = File.ReadAllBytes(path);
            bytes[^1] ^= 0x01;   // the last byte of the last moment: same size, other content
            File.WriteAllBytes(path, bytes);
        }
        else File.AppendAllText(path, " ");

        var (code, _, error) = Finetune("--max-steps", "2", "--resume", checkpoint);
        Assert.That(code, Is.EqualTo(2), error);
        Assert.That(error, Does.Contain(path).And.Contain(what));
        Assert.That(RunFiles.CheckpointSteps(Run), Is.EqualTo(new[] { 1, 2 }), "refused before the folder changed");
    }
}
