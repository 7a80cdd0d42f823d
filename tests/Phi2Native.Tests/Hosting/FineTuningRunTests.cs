using NUnit.Framework;
using Phi2Native.FineTuning.Selection;
using Phi2Native.FineTuning.Training;
using Phi2Native.Hosting;
using Phi2Native.Tests.Support;
using Phi2Native.Text;

namespace Phi2Native.Tests.Hosting;

/// <summary>
/// The host API for fine-tuning: FineTuningRun composes a run exactly as `phi2 finetune` does (same losses, same
/// adapter bytes), reports through events, stops on the host's cancellation token after a checkpoint, reports a
/// non-finite stop as a result rather than an exception, keeps the whole history across a resume, and its adapter
/// generates through Phi2Engine.
/// </summary>
[TestFixture]
public class FineTuningRunTests : TemporaryDirectoryTest
{
    private FineTuningOptions Options(string run, int steps) => new()
    {
        DataPath = RunFiles.Data(Temp), OutputDirectory = run, BatchSize = 2, MaxLength = 32,
        Lora = config => TrainingSelection.Build(["q_proj", "v_proj"], [], layers: null, dropout: 0.1),
        Training = new TrainingOptions { MaxSteps = steps, Epochs = 100, LearningRate = 3e-3, Seed = 7, Decay = Phi2Native.FineTuning.Optim.LearningRateDecay.Constant },
    };

    [Test]
    public void AHostFineTunesExactlyAsTheCommandLineDoes()
    {
        string host = Path.Combine(Temp, "host"), cli = Path.Combine(Temp, "cli");
        var steps = new List<StepMetrics>();
        var checkpoints = new List<string>();
        using (var run = FineTuningRun.Open(Options(host, 5) with { Training = Options(host, 5).Training with { SaveEvery = 2 } }))
        {
            run.StepCompleted += steps.Add;
            run.CheckpointSaved += checkpoints.Add;
            Assert.That(run.TotalSteps, Is.EqualTo(5));
            Assert.That(run.TrainableParameters, Is.GreaterThan(0).And.LessThan(run.TotalParameters));
            var result = run.Train();
            Assert.That(result.Stop, Is.EqualTo(TrainingStop.Completed));
            Assert.That(result.AdapterDirectory, Is.EqualTo(host));
            Assert.That(Path.GetFileName(result.LastCheckpoint), Is.EqualTo("step-5"));
        }
        Assert.That(steps.Select(s => s.Step), Is.EqualTo(new[] { 1, 2, 3, 4, 5 }));
        Assert.That(checkpoints.Select(Path.GetFileName), Is.EqualTo(new[] { "step-2", "step-4", "step-5" }));

        var (code, _, error) = Phi2("finetune", "--data", RunFiles.Data(Temp), "--out", cli, "--max-steps", "5", "--epochs", "100", "--save-every", "2",
            "--batch-size", "2", "--max-length", "32", "--lr", "3e-3", "--seed", "7", "--schedule", "constant", "--target", "q_proj,v_proj", "--dropout", "0.1");
        Assert.That(code, Is.EqualTo(0), error);
        Assert.That(RunFiles.Losses(cli), Is.EqualTo(steps.Select(s => (s.Step, s.Loss))), "the same losses, bit for bit");
        Assert.That(RunFiles.AdapterBytes(cli), Is.EqualTo(RunFiles.AdapterBytes(host)));
    }

    [Test]
    public void CancellingFinishesTheStepWritesACheckpointAndTheResumeKeepsTheWholeHistory()
    {
        string run = Path.Combine(Temp, "run");
        using var cancel = new CancellationTokenSource();
        FineTuningResult stopped;
        using (var first = FineTuningRun.Open(Options(run, 6)))
        {
            first.StepCompleted += m => { if (m.Step == 2) cancel.Cancel(); };
            stopped = first.Train(cancel.Token);
        }
        Assert.That(stopped.Stop, Is.EqualTo(TrainingStop.Cancelled));
        Assert.That(stopped.Steps, Is.EqualTo(2));
        Assert.That(stopped.LastCheckpoint, Is.EqualTo(Path.Combine(run, "checkpoints", "step-2")));
        Assert.That(File.Exists(Path.Combine(run, "adapter_model.safetensors")), Is.True);

        using var resumed = FineTuningRun.Open(Options(run, 6) with { ResumeFrom = stopped.LastCheckpoint });
        Assert.That(resumed.StartStep, Is.EqualTo(2));
        Assert.That(resumed.StepHistory.Select(s => s.Step), Is.EqualTo(new[] { 1, 2 }), "the history before the resume, read back");
        Assert.That(resumed.Train().Stop, Is.EqualTo(TrainingStop.Completed));
        Assert.That(resumed.StepHistory.Select(s => s.Step), Is.EqualTo(new[] { 1, 2, 3, 4, 5, 6 }), "what loss.png draws: the whole run");
    }

    [Test]
    public async Task TheTrainedAdapterGeneratesThroughTheEngine()
    {
        string run = Path.Combine(Temp, "run");
        FineTuningResult result;
        using (var training = FineTuningRun.Open(Options(run, 2))) result = training.Train();
        using var engine = Phi2Engine.Load(adapterDirectory: result.AdapterDirectory);
        Assert.That(engine.Adapter, Is.Not.Null);
        string text = await engine.CompleteAsync("And God said", new GenerationOptions { MaxNewTokens = 4 });
        Assert.That(text, Is.Not.Empty);
    }

    [Test]
    public void ASecondRunIntoAHeldFolderIsRefusedUntilTheFirstIsDisposed()
    {
        string run = Path.Combine(Temp, "run");
        using (FineTuningRun.Open(Options(run, 1)))
        {
            var refused = Assert.Throws<Phi2Exception>(() => FineTuningRun.Open(Options(run, 1)))!;
            Assert.That(refused.Message, Does.Contain("in use by another fine-tuning run"));
        }
        using var second = FineTuningRun.Open(Options(run, 1));
        Assert.That(second.Train().Stop, Is.EqualTo(TrainingStop.Completed));
    }
}
