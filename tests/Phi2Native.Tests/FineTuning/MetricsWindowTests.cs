using System.Runtime.InteropServices;
using System.Text;
using NUnit.Framework;
using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda.Emulator;
using Phi2Native.IO;
using Phi2Native.FineTuning;
using Phi2Native.FineTuning.Data;
using Phi2Native.FineTuning.Lora;
using Phi2Native.FineTuning.Optim;
using Phi2Native.FineTuning.Training;
using Phi2Native.Models.Phi2;
using Phi2Native.Profiling;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.FineTuning;

/// <summary>
/// <see cref="TrainingOptions.MetricsEvery"/>: reading a window of K steps' status blocks at once changes nothing but
/// the number of host waits. The reference is the run that reads after every step (K = 1): the same parameters and
/// optimizer state on disk byte for byte, the same losses, norms, skipped steps, validations and checkpoints, with a
/// non-finite step inside a window (skipped, or stopping the run), on the CPU and on the emulated device.
/// </summary>
[TestFixture]
public class MetricsWindowTests : TemporaryDirectoryTest
{
    private static readonly Phi2Config Small = Phi2Config.Tiny with
    {
        VocabSize = 40, HiddenSize = 24, IntermediateSize = 48, NumHiddenLayers = 2, NumAttentionHeads = 2, RotaryDim = 6, ResidPdrop = 0.1,
    };

    // 'z' (122 % 40 = 2) is the only character of the poisoned example that no other example holds: its embedding row
    // is set to NaN, so exactly the steps whose batches hold that example have a NaN loss.
    private const int PoisonedId = 'z' % 40;

    private static int[] Encode(string text) => text.Select(c => c % 40).ToArray();

    private static JsonlDataset Data(int lines, int offset, int? poisonedLine = null)
    {
        var jsonl = new StringBuilder();
        for (int i = 0; i < lines; i++)
            jsonl.AppendLine(i == poisonedLine ? "{\"text\": \"the z sat\"}" : $"{{\"text\": \"the {(i + offset) % 7} cat sat on the mat {(i + offset) % 5} times\"}}");
        return JsonlDataset.Read(new MemoryStream(Encoding.UTF8.GetBytes(jsonl.ToString())), "synthetic.jsonl", Encode);
    }

    private sealed record Run(List<string> Events, TrainingResult Result, string Output);

    private static readonly TrainingOptions Options = new()
    {
        Epochs = 3, LearningRate = 3e-3, WarmupSteps = 2, GradientAccumulation = 2, MaxGradientNorm = 1.0, WeightDecay = 0.01, Seed = 7,
    };

    private Run Train(IBackend backend, TrainingOptions options, string name, int? poisonedLine = null, bool validation = true)
    {
        string output = Path.Combine(Temp, name);
        using var model = Phi2Model.CreateRandom(Small, backend, seed: 9);
        if (poisonedLine is not null) PoisonRow(model.EmbedTokens.Weight, PoisonedId);
        var config = new LoraConfig { R = 4, Alpha = 8, Dropout = 0.1, TargetModules = ["q_proj", "v_proj", "fc1"], ModulesToSave = ["lm_head"] };
        using var lora = LoraModel.Create(model, config, seed: 5);
        var loader = BatchLoader.Create(Data(24, 0, poisonedLine), new BatchingOptions { BatchSize = 2, MaxLength = 16, Seed = 3, Mode = BatchingMode.Padding });
        var rows = validation ? TrainingRows.Create(Data(8, 100), 16, BatchingMode.Packing) : null;
        using var trainer = new Trainer(lora, loader, rows, options, output);
        // Everything a host learns from the run, in order, bit for bit (R: the shortest text that round-trips the double).
        var events = new List<string>();
        trainer.StepCompleted += m => events.Add($"step {m.Step} epoch {m.Epoch} loss {m.Loss:R} norm {m.GradientNorm:R} lr {m.LearningRate:R} tokens {m.Tokens}");
        trainer.StepSkipped += s => events.Add($"skipped {s.Value.Step} {s.Value.What} ({s.Skipped} of {s.Allowed})");
        trainer.Evaluated += m => events.Add($"evaluated at {m.Step}: {m.Loss:R}");
        trainer.CheckpointSaved += folder => events.Add($"saved {Path.GetFileName(folder)}");
        var result = trainer.Run();
        return new Run(events, result, output);
    }

    private static void PoisonRow(Tensor weight, int row)
    {
        var bytes = new byte[weight.ElementCount * sizeof(float)];
        weight.Backend.CopyToHost(weight, bytes);
        var values = MemoryMarshal.Cast<byte, float>(bytes.AsSpan());
        int channels = weight.Shape[1];
        values.Slice(row * channels, channels).Fill(float.NaN);
        using var poisoned = weight.Backend.FromBytes(bytes, DType.F32, weight.Shape, DType.F32);
        weight.Backend.Copy(poisoned, weight);
    }

    // Every file of every checkpoint, relative path and bytes (manifests hash them; trainer_state.json holds the cursor).
    private static Dictionary<string, byte[]> Checkpoints(string output) =>
        Directory.GetFiles(Path.Combine(output, "checkpoints"), "*", SearchOption.AllDirectories)
            .ToDictionary(f => Path.GetRelativePath(output, f), File.ReadAllBytes);

    // Skipped and halted steps do not count for AdamW's bias corrections: every step count in the checkpoint is the
    // applied steps' (the comparison with K = 1 alone could not show it, both run the same code).
    private static void AssertAdamWCounted(Run run, int checkpointStep, int appliedSteps)
    {
        using var file = SafeTensorsFile.Open(Path.Combine(run.Output, "checkpoints", $"step-{checkpointStep}", TrainingCheckpoint.OptimizerFileName));
        var counts = file.Tensors.Where(t => t.Name == AdamW.StepKey || t.Name.StartsWith(AdamW.ParameterStepPrefix, StringComparison.Ordinal))
            .Select(t => (t.Name, Count: file.ReadInt32(t.Name)[0])).ToList();
        Assert.That(counts, Has.Count.GreaterThan(1));
        Assert.That(counts, Is.All.Matches<(string Name, int Count)>(c => c.Count == appliedSteps), string.Join(", ", counts));
    }

    private static void AssertSameRun(Run reference, Run windowed)
    {
        Assert.That(windowed.Events, Is.EqualTo(reference.Events), "the same steps, skips, validations and checkpoints, in order, bit for bit");
        Assert.That(windowed.Result with { LastCheckpoint = null }, Is.EqualTo(reference.Result with { LastCheckpoint = null }));
        var expected = Checkpoints(reference.Output);
        var actual = Checkpoints(windowed.Output);
        Assert.That(actual.Keys.Order(), Is.EqualTo(expected.Keys.Order()), "the same checkpoint files");
        foreach (var (file, bytes) in expected) Assert.That(actual[file], Is.EqualTo(bytes), $"{file}: byte for byte");
    }

    [Test]
    public void FourStepsAReadTrainExactlyAsOneStepAReadOnTheCpu()
    {
        var options = Options with { EvaluateEvery = 3, SaveEvery = 5 };
        var reference = Train(GradientCheck.Backend, options, "k1");
        Assert.That(reference.Result.Steps, Is.GreaterThan(8));
        var windowed = Train(GradientCheck.Backend, options with { MetricsEvery = 4 }, "k4");
        AssertSameRun(reference, windowed);
        // Windows of 4 end early at validations and saves: nothing here may read a step's state out of order.
        var epochsOnly = Train(GradientCheck.Backend, Options with { MetricsEvery = 4 }, "k4-epochs");
        AssertSameRun(Train(GradientCheck.Backend, Options, "k1-epochs"), epochsOnly);
    }

    [Test]
    public void ANonFiniteStepInsideAWindowIsSkippedAndTheHaltedStepsRunAgain_AsWithOneStepARead()
    {
        // Batches of two padded rows, 12 micro-batches an epoch, accumulation 2: the poisoned example (line 5) falls into
        // one step of each epoch (step 6 first), and every such step is skipped. No validation: windows end only when
        // full, at saves (7, 14) and at the end, so step 6 halts step 7 in the windows 5-7 (K = 4) and 6-7 (K = 5).
        var options = Options with { SkipNonFiniteSteps = 10, SaveEvery = 7 };
        var reference = Train(GradientCheck.Backend, options, "k1", poisonedLine: 5, validation: false);
        var skipped = reference.Events.Where(e => e.StartsWith("skipped", StringComparison.Ordinal)).ToList();
        Assert.That(skipped, Has.Count.GreaterThanOrEqualTo(2), "the poisoned example is met in several epochs");
        Assert.That(skipped[0], Does.StartWith("skipped 6 the loss is NaN"));
        Assert.That(reference.Result.Stop, Is.EqualTo(TrainingStop.Completed));
        AssertAdamWCounted(reference, reference.Result.Steps, reference.Result.Steps - skipped.Count);
        foreach (int k in new[] { 4, 5 })
        {
            var windowed = Train(GradientCheck.Backend, options with { MetricsEvery = k }, $"k{k}", poisonedLine: 5, validation: false);
            AssertSameRun(reference, windowed);
            AssertAdamWCounted(windowed, windowed.Result.Steps, windowed.Result.Steps - skipped.Count);
        }
    }

    [Test]
    public void ANonFiniteStepInsideAWindowStopsTheRunWithTheCheckpointBeforeIt_AsWithOneStepARead()
    {
        // Step 6 is the first that is not finite; with K = 4 it is inside the window 5-8, after step 5 (applied), and
        // the state before it is written as step-5.
        var options = Options;
        var reference = Train(GradientCheck.Backend, options, "k1", poisonedLine: 5, validation: false);
        Assert.That(reference.Result.Stop, Is.EqualTo(TrainingStop.NonFinite));
        Assert.That(reference.Result.Steps, Is.EqualTo(5), "the last good step");
        Assert.That(reference.Events.Last(), Is.EqualTo("saved step-5"), "the state before the bad step is written");
        var windowed = Train(GradientCheck.Backend, options with { MetricsEvery = 4 }, "k4", poisonedLine: 5, validation: false);
        AssertSameRun(reference, windowed);
        AssertAdamWCounted(windowed, 5, 5);
        // Saved every step: every window is one step, and the state before the bad step is on disk already.
        var saved = Train(GradientCheck.Backend, Options with { SaveEvery = 1 }, "k1-saved", poisonedLine: 5, validation: false);
        AssertSameRun(saved, Train(GradientCheck.Backend, Options with { SaveEvery = 1, MetricsEvery = 4 }, "k4-saved", poisonedLine: 5, validation: false));
    }

    [Test, Category("Emulated")]
    public void OnTheEmulatedDeviceAWindowIsOneHostReadAndTrainsExactlyAsOneStepARead()
    {
        using var device = new EmulatedDevice();
        using var cuda = new CudaBackend(device, ownsDevice: false);
        var options = Options with { MaxSteps = 8, SkipNonFiniteSteps = 10 };
        int StatusReads(IReadOnlyList<ProfileEvent> events) =>
            events.Count(e => e.Kind == ProfileEventKind.HostSync && e.Detail == "CudaBackend.CopyToHost <- Trainer.Run");
        Run reference = null!, windowed = null!;
        var referenceEvents = ProfileRecorder.Record(() => reference = Train(cuda, options, "k1", validation: false));
        var windowedEvents = ProfileRecorder.Record(() => windowed = Train(cuda, options with { MetricsEvery = 4 }, "k4", validation: false));
        Assert.That(StatusReads(referenceEvents), Is.EqualTo(8), "one read a step");
        Assert.That(StatusReads(windowedEvents), Is.EqualTo(2), "one read per window of 4 steps");
        Assert.That(windowedEvents.Count(e => e.Kind == ProfileEventKind.HostSync), Is.EqualTo(referenceEvents.Count(e => e.Kind == ProfileEventKind.HostSync) - 6),
            "no other wait comes in their place");
        AssertSameRun(reference, windowed);

        // A skipped step inside a window: halted on the device, re-run, and the same as one step a read.
        var poisoned = Train(cuda, options, "k1-nan", poisonedLine: 5, validation: false);
        Assert.That(poisoned.Events.Any(e => e.StartsWith("skipped", StringComparison.Ordinal)), Is.True);
        AssertSameRun(poisoned, Train(cuda, options with { MetricsEvery = 4 }, "k4-nan", poisonedLine: 5, validation: false));
    }

    [Test]
    public void MetricsEveryMustBeAtLeastOne()
    {
        foreach (int bad in new[] { 0, -1, int.MinValue })
            Assert.That(Assert.Throws<Phi2Exception>(() => (Options with { MetricsEvery = bad }).Validate())!.Message,
                Does.Contain("--metrics-every must be at least 1").And.Contain(bad.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        Assert.That(new TrainingOptions().MetricsEvery, Is.EqualTo(1), "reads every step unless asked");
        Assert.DoesNotThrow(() => (Options with { MetricsEvery = 1000 }).Validate());
    }
}
