using System.Text.Json;
using NUnit.Framework;
using Phi2Native.Embedded;
using Phi2Native.FineTuning.Optim;
using Phi2Native.IO;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Cli;

/// <summary>
/// A loss, gradient or parameter that is not finite: `phi2 finetune` stops with exit code 3 naming the step and what was
/// not finite, keeps the last good checkpoint and adapter (never one holding NaN), and writes only valid lines to
/// metrics.jsonl; --skip-nonfinite N lets at most N such steps pass, each consuming its batch and advancing the
/// schedule while updating nothing. The NaNs are planted for real: in a base weight, in an embedding row only one
/// example reaches, and by a weight decay so large that one update overflows.
/// </summary>
[TestFixture]
public class NonFiniteTrainingTests : TemporaryDirectoryTest
{
    private string Run => Path.Combine(Temp, "run");

    // The embedded model as a folder, with the rows or elements of some tensors set to NaN.
    private string ModelWithNaN(Func<string, int[], IEnumerable<int>> nanIndices)
    {
        string folder = EmbeddedDefault.WriteModelFolder(Path.Combine(Temp, "model"));
        string weights = Path.Combine(folder, "model.safetensors");
        var writer = new SafeTensorsWriter();
        using (var file = SafeTensorsFile.Open(weights))
        {
            foreach (var key in file.Metadata) writer.Metadata[key.Key] = key.Value;
            foreach (var info in file.Tensors)
            {
                float[] values = file.ReadAsSingle(info.Name);
                foreach (int i in nanIndices(info.Name, Array.ConvertAll(info.Shape, d => (int)d))) values[i] = float.NaN;
                writer.AddSingle(info.Name, values, info.Shape);
            }
        }
        writer.Save(weights + ".new");
        File.Move(weights + ".new", weights, overwrite: true);
        return folder;
    }

    private static void AssertEveryLineIsValidJsonWithoutNaN(string run)
    {
        // JSON has no NaN or infinity literal: a line holding one does not parse (System.Text.Json is strict about it).
        foreach (var line in File.ReadAllLines(Path.Combine(run, "metrics.jsonl")))
        {
            using var record = JsonDocument.Parse(line);
            foreach (var property in record.RootElement.EnumerateObject())
                if (property.Value.ValueKind == JsonValueKind.Number) Assert.That(double.IsFinite(property.Value.GetDouble()), Is.True, line);
        }
    }

    [Test]
    public void ANaNInTheBaseWeightsStopsAtStepOneWithExitCode3_KeepingTheLastGoodState()
    {
        string model = ModelWithNaN((name, _) => name == "model.layers.0.mlp.fc1.weight" ? [0] : []);
        var (code, output, error) = Phi2(["finetune", "--model", model, "--data", RunFiles.Data(Temp), "--out", Run, "--max-steps", "4", .. RunFiles.Fast]);
        Assert.That(code, Is.EqualTo(3), error);
        Assert.That(error, Does.Contain("training stopped at step 1: the loss is NaN").And.Contain("That step updated nothing"));
        Assert.That(error, Does.Not.Contain("   at "), "no stack trace");
        Assert.That(output, Does.Contain("stopped at step 1").And.Contain("--resume"));
        AssertEveryLineIsValidJsonWithoutNaN(Run);
        Assert.That(RunFiles.Losses(Run), Is.Empty, "no step line for the step that was not finite");
        // The last good state is the start: its checkpoint and adapter are on disk, and finite.
        Assert.That(RunFiles.CheckpointSteps(Run), Is.EqualTo(new[] { 0 }));
        using var adapter = SafeTensorsFile.Open(Path.Combine(Run, "adapter_model.safetensors"));
        Assert.That(adapter.Tensors.SelectMany(t => adapter.ReadAsSingle(t.Name)).All(float.IsFinite), Is.True);
    }

    [Test]
    public void AnUpdateThatOverflowsTheParametersIsCaughtBeforeAnyCheckpointHoldsIt()
    {
        // A weight decay this large is finite, but one decoupled decay step (p *= 1 - lr * wd) overflows every decayed
        // parameter: step 1's loss and gradient are finite, its update is not.
        string data = RunFiles.Data(Temp);
        var (code, _, error) = Phi2(["finetune", "--data", data, "--out", Run, "--max-steps", "4", "--save-every", "1", "--weight-decay", "1e300", .. RunFiles.Fast]);
        Assert.That(code, Is.EqualTo(3), error);
        Assert.That(error, Does.Contain("training stopped at step 1: the parameter base_model.model.").And.Contain("lora_").And.Contain("is not finite after step 1's update"));
        Assert.That(RunFiles.CheckpointSteps(Run), Is.Empty, "no checkpoint holds a parameter that is not finite");
        Assert.That(File.Exists(Path.Combine(Run, "adapter_model.safetensors")), Is.False, "nor does an adapter");
        AssertEveryLineIsValidJsonWithoutNaN(Run);

        // Without a checkpoint in between, step 2's loss is the first value that is not finite.
        (code, _, error) = Phi2(["finetune", "--data", data, "--out", Run, "--max-steps", "4", "--weight-decay", "1e300", "--overwrite", .. RunFiles.Fast]);
        Assert.That(code, Is.EqualTo(3), error);
        Assert.That(error, Does.Contain("training stopped at step 2: the loss is NaN").And.Contain("no checkpoint of a good state is on disk"));
        Assert.That(RunFiles.Losses(Run).Select(l => l.Step), Is.EqualTo(new[] { 1 }));
        AssertEveryLineIsValidJsonWithoutNaN(Run);
    }

    // One example reaches a NaN embedding row; with batches of one example each, exactly one step is not finite.
    private (string Model, string Data, int Steps) OneBadExample()
    {
        var tokenizer = EmbeddedDefault.Tokenizer();
        int[] bad = tokenizer.Encode("@");
        string data = Path.Combine(Temp, "data.jsonl");
        var lines = Enumerable.Range(0, 6).Select(i => $"And Moses said unto the people {i} times, Fear ye not.").Append("And he wrote @ upon the stone.").ToArray();
        File.WriteAllLines(data, lines.Select(text => JsonSerializer.Serialize(new Dictionary<string, string> { ["text"] = text })));
        Assert.That(lines[..^1].SelectMany(tokenizer.Encode).Intersect(bad), Is.Empty, "only the last example holds the poisoned ids");
        int hidden = EmbeddedDefault.Config.HiddenSize;
        string model = ModelWithNaN((name, _) => name == "model.embed_tokens.weight" ? bad.SelectMany(id => Enumerable.Range(id * hidden, hidden)) : []);
        return (model, data, lines.Length);
    }

    [Test]
    public void SkipNonFiniteLetsAStepPass_ConsumingItsBatchAndAdvancingTheScheduleButUpdatingNothing()
    {
        var (model, data, steps) = OneBadExample();
        string[] args = ["finetune", "--model", model, "--data", data, "--out", Run, "--padding", "--batch-size", "1", "--max-length", "32",
                         "--schedule", "linear", "--warmup", "0", "--lr", "1e-2", "--seed", "3"];
        var stopped = Phi2(args);
        Assert.That(stopped.Code, Is.EqualTo(3), "off by default: the first non-finite step stops the run");

        var (code, output, error) = Phi2([.. args, "--overwrite", "--skip-nonfinite", "1"]);
        Assert.That(code, Is.EqualTo(0), error);
        Assert.That(output, Does.Contain($"done: {steps} steps (1 skipped)"));
        var skipped = RunFiles.Metrics(Run).Where(m => m.TryGetProperty("skipped", out _)).ToList();
        Assert.That(skipped, Has.Count.EqualTo(1));
        int skippedStep = skipped[0].GetProperty("Step").GetInt32();
        Assert.That(skipped[0].GetProperty("skipped").GetString(), Is.EqualTo("the loss is NaN"));
        Assert.That(error, Does.Contain($"warning: step {skippedStep} skipped: the loss is NaN; it updated nothing (1 of at most 1 skipped"));
        AssertEveryLineIsValidJsonWithoutNaN(Run);

        // The schedule advanced through the skipped step: every other step has its own position's rate.
        var schedule = LearningRateSchedule.LinearWithWarmup(0, steps);
        var rates = RunFiles.Metrics(Run).Where(m => m.TryGetProperty("learning_rate", out _))
            .Select(m => (Step: m.GetProperty("Step").GetInt32(), Rate: m.GetProperty("learning_rate").GetDouble())).ToList();
        Assert.That(rates.Select(r => r.Step), Is.EqualTo(Enumerable.Range(1, steps).Where(s => s != skippedStep)));
        foreach (var (step, rate) in rates) Assert.That(rate, Is.EqualTo(1e-2 * schedule.Factor(step - 1)).Within(1e-15), $"step {step}");
        // It updated nothing: AdamW took one step fewer than the run, and the adapter is finite.
        using var optimizer = SafeTensorsFile.Open(Path.Combine(Run, "checkpoints", $"step-{steps}", "optimizer.safetensors"));
        Assert.That(optimizer.ReadInt32(AdamW.StepKey)[0], Is.EqualTo(steps - 1));
        using var adapter = SafeTensorsFile.Open(Path.Combine(Run, "adapter_model.safetensors"));
        Assert.That(adapter.Tensors.SelectMany(t => adapter.ReadAsSingle(t.Name)).All(float.IsFinite), Is.True);

        // --metrics-every 4 reads the steps 4 at a time: the skipped step halts the rest of its window, which runs
        // again, and the run is the same: the same lines (loss or skip, step by step) and the same adapter and optimizer.
        string windowed = Path.Combine(Temp, "windowed");
        var again = Phi2([.. args.Select(a => a == Run ? windowed : a), "--skip-nonfinite", "1", "--metrics-every", "4"]);
        Assert.That(again.Code, Is.EqualTo(0), again.Error);
        static string[] Lines(string run) => [.. RunFiles.Metrics(run).Where(m => m.TryGetProperty("Step", out _))
            .Select(m => $"{m.GetProperty("Step")} {(m.TryGetProperty("Loss", out var loss) ? loss.GetDouble().ToString("R") : "")} {(m.TryGetProperty("skipped", out var why) ? why.GetString() : "")}")];
        Assert.That(Lines(windowed), Is.EqualTo(Lines(Run)));
        foreach (string file in new[] { "adapter_model.safetensors", Path.Combine("checkpoints", $"step-{steps}", "optimizer.safetensors") })
            Assert.That(File.ReadAllBytes(Path.Combine(windowed, file)), Is.EqualTo(File.ReadAllBytes(Path.Combine(Run, file))), file);
    }
}
