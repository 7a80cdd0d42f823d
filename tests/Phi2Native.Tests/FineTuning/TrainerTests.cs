using System.Text;
using NUnit.Framework;
using Phi2Native.FineTuning;
using Phi2Native.FineTuning.Data;
using Phi2Native.FineTuning.Lora;
using Phi2Native.FineTuning.Training;
using Phi2Native.Models.Phi2;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.FineTuning;

/// <summary>The training loop: it learns, it repeats bit for bit, and a resumed run continues exactly.</summary>
[TestFixture]
public class TrainerTests : TemporaryDirectoryTest
{
    private static readonly Phi2Config Small = Phi2Config.Tiny with
    {
        VocabSize = 40, HiddenSize = 24, IntermediateSize = 48, NumHiddenLayers = 2, NumAttentionHeads = 2, RotaryDim = 6, ResidPdrop = 0.1,
    };

    private static int[] Encode(string text) => text.Select(c => c % 40).ToArray();

    private static JsonlDataset Data(int lines, int offset)
    {
        var jsonl = new StringBuilder();
        for (int i = 0; i < lines; i++) jsonl.AppendLine($"{{\"text\": \"the {(i + offset) % 7} cat sat on the mat {(i + offset) % 5} times\"}}");
        return JsonlDataset.Read(new MemoryStream(Encoding.UTF8.GetBytes(jsonl.ToString())), "synthetic.jsonl", Encode);
    }

    private sealed record Run(List<double> Losses, List<double> Validation, List<double> GradientNorms, TrainingResult Result);

    private Run Train(TrainingOptions options, string output, string? resumeFrom = null, int accumulationBatch = 4, CancellationToken cancel = default,
        Action<Trainer>? onStep = null, double loraDropout = 0.1, TimeProvider? time = null)
    {
        using var model = Phi2Model.CreateRandom(Small, GradientCheck.Backend, seed: 9);
        var config = new LoraConfig { R = 4, Alpha = 8, Dropout = loraDropout, TargetModules = ["q_proj", "v_proj", "fc1"], ModulesToSave = ["lm_head"] };
        using var lora = resumeFrom is null ? LoraModel.Create(model, config, seed: 5) : PeftAdapter.Load(model, resumeFrom);
        var loader = BatchLoader.Create(Data(24, 0), new BatchingOptions { BatchSize = accumulationBatch, MaxLength = 16, Seed = 3 });
        var validation = TrainingRows.Create(Data(8, 100), 16, BatchingMode.Packing);
        using var trainer = new Trainer(lora, loader, validation, options, output);
        if (time is not null) trainer.Time = time;
        if (resumeFrom is not null) TrainingCheckpoint.Restore(trainer, resumeFrom);
        var losses = new List<double>();
        var evaluations = new List<double>();
        var norms = new List<double>();
        trainer.StepCompleted += m => { losses.Add(m.Loss); norms.Add(m.GradientNorm); onStep?.Invoke(trainer); };
        trainer.Evaluated += m => evaluations.Add(m.Loss);
        var result = trainer.Run(cancel);
        return new Run(losses, evaluations, norms, result);
    }

    private static readonly TrainingOptions Options = new()
    {
        Epochs = 3, LearningRate = 3e-3, WarmupSteps = 2, GradientAccumulation = 2, MaxGradientNorm = 1.0, WeightDecay = 0.01, Seed = 7,
    };

    [Test]
    public void ValidationLossFallsAndTheRunRepeatsBitForBit()
    {
        var learns = Options with { LearningRate = 1e-2, Epochs = 5 };
        var first = Train(learns, Path.Combine(Temp, "a"));
        var second = Train(learns, Path.Combine(Temp, "b"));
        Assert.That(first.Result.Steps, Is.EqualTo(first.Losses.Count));
        Assert.That(first.Validation.Last(), Is.LessThan(first.Validation.First() * 0.8), "validation loss falls");
        Assert.That(second.Losses, Is.EqualTo(first.Losses), "same seeds, same losses, bit for bit");
        Assert.That(Directory.Exists(Path.Combine(Temp, "a", "checkpoints", $"step-{first.Result.Steps}")), Is.True, "a final checkpoint");
    }

    [Test]
    public void AResumedRunContinuesWithExactlyTheUninterruptedLosses()
    {
        var whole = Train(Options with { SaveEvery = 4 }, Path.Combine(Temp, "whole"));
        Assert.That(whole.Result.Steps, Is.GreaterThan(6));
        string checkpoint = Path.Combine(Temp, "whole", "checkpoints", "step-4");
        Assert.That(TrainingCheckpoint.IsCheckpoint(checkpoint), Is.True);
        var resumed = Train(Options with { SaveEvery = 4 }, Path.Combine(Temp, "resumed"), resumeFrom: checkpoint);
        Assert.That(resumed.Losses, Is.EqualTo(whole.Losses.Skip(4)), "resumed losses equal the uninterrupted run's, bit for bit");
    }

    [Test]
    public void CancellationWritesACheckpointThatResumesExactly()
    {
        using var cancel = new CancellationTokenSource();
        var interrupted = Train(Options, Path.Combine(Temp, "run"), cancel: cancel.Token, onStep: t => { if (t.Step == 3) cancel.Cancel(); });
        Assert.That(interrupted.Result.Interrupted, Is.True);
        Assert.That(interrupted.Result.LastCheckpoint, Does.EndWith("step-3"));
        Assert.That(Directory.GetDirectories(Path.Combine(Temp, "run", "checkpoints")).Select(Path.GetFileName), Is.EqualTo(new[] { "step-3" }),
            "no temporary folder is left behind");
        var resumed = Train(Options, Path.Combine(Temp, "run2"), resumeFrom: interrupted.Result.LastCheckpoint);
        var whole = Train(Options, Path.Combine(Temp, "whole"));
        Assert.That(resumed.Losses, Is.EqualTo(whole.Losses.Skip(3)));
    }

    [Test]
    public void AccumulatingTwoHalfBatchesEqualsOneFullBatch()
    {
        var noDropout = Options with { GradientAccumulation = 1, MaxSteps = 2, WarmupSteps = 0, Epochs = 1, ResidualDropout = 0, MaxGradientNorm = 0 };
        // Packed rows all score the same number of tokens, so the mean of two half-batch means is the full batch's mean,
        // and the summed gradients are the full batch's gradient: same loss, same gradient norm.
        var full = Train(noDropout, Path.Combine(Temp, "full"), accumulationBatch: 4, loraDropout: 0);
        var halves = Train(noDropout with { GradientAccumulation = 2 }, Path.Combine(Temp, "halves"), accumulationBatch: 2, loraDropout: 0);
        Assert.That(halves.Losses[0], Is.EqualTo(full.Losses[0]).Within(1e-5));
        Assert.That(halves.GradientNorms[0], Is.EqualTo(full.GradientNorms[0]).Within(1e-5 * full.GradientNorms[0]));
        Assert.That(halves.Losses[1], Is.EqualTo(full.Losses[1]).Within(1e-4), "and the step after the update agrees too");
    }

    [Test]
    public void BadOptionsNameTheOption()
    {
        Assert.That(Assert.Throws<Phi2Exception>(() => (Options with { LearningRate = -1 }).Validate())!.Message, Does.Contain("--lr"));
        Assert.That(Assert.Throws<Phi2Exception>(() => (Options with { GradientAccumulation = 0 }).Validate())!.Message, Does.Contain("--grad-accum"));
    }

    /// <summary>A clock the test moves: each step advances it by a fixed amount.</summary>
    private sealed class SteppedClock(TimeSpan perStep) : TimeProvider
    {
        private long _ticks;

        public void Step() => _ticks += perStep.Ticks;

        public override long TimestampFrequency => TimeSpan.TicksPerSecond;

        public override long GetTimestamp() => _ticks;
    }

    [Test]
    public void SaveEveryMinutesCheckpointsWhenThatMuchTimeHasPassedSinceTheLastCheckpoint()
    {
        // 0.4 minutes a step, a checkpoint every minute: due after steps 3, 6, 9, ... (the final one is written anyway).
        var clock = new SteppedClock(TimeSpan.FromMinutes(0.4));
        string output = Path.Combine(Temp, "timed");
        var run = Train(Options with { Epochs = 2, SaveEveryMinutes = 1 }, output, onStep: _ => clock.Step(), time: clock);
        int total = run.Result.Steps;
        Assert.That(total, Is.GreaterThan(6));
        var expected = Enumerable.Range(1, total).Where(s => s % 3 == 0 && s < total).Append(total);
        var written = Directory.GetDirectories(Path.Combine(output, "checkpoints"), "step-*").Select(d => int.Parse(Path.GetFileName(d)[5..])).Order();
        Assert.That(written, Is.EqualTo(expected));
    }
}
