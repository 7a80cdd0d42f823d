using System.Text.Json;
using NUnit.Framework;
using Phi2Native.Backends.Cpu;
using Phi2Native.Cli;
using Phi2Native.Embedded;
using Phi2Native.FineTuning;
using Phi2Native.FineTuning.Lora;
using Phi2Native.FineTuning.Selection;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;
using Phi2Native.Text;

namespace Phi2Native.Tests.Cli;

/// <summary>`phi2 finetune` end to end on the embedded model: outputs, learning, resume, new tokens, bad input.</summary>
[TestFixture]
public class FinetuneCommandTests : TemporaryDirectoryTest
{

    private static List<JsonElement> Metrics(string run) =>
        File.ReadAllLines(Path.Combine(run, "metrics.jsonl")).Select(line => JsonDocument.Parse(line).RootElement.Clone()).ToList();

    private static readonly string[] Small = ["--batch-size", "4", "--max-length", "64", "--lr", "3e-3", "--seed", "5"];

    [Test]
    public void ALoraRunOnTheUntrainedEmbeddedModelLowersValidationLossAndWritesEverything()
    {
        // Explicitly the untrained model (random weights): from near-uniform predictions 16 steps lower the loss by far
        // more than they can from the pretrained default, so a run that learns nothing cannot pass.
        string model = EmbeddedDefault.WriteRandomModelFolder(Path.Combine(Temp, "random"), EmbeddedDefault.DefaultSeed);
        string data = EmbeddedDefault.WriteTrainingJsonl(Path.Combine(Temp, "train.jsonl"));
        string validationData = EmbeddedDefault.WriteValidationJsonl(Path.Combine(Temp, "val.jsonl"));
        string run = Path.Combine(Temp, "run");
        var (code, output, error) = Phi2(["finetune", "--model", model, "--data", data, "--val", validationData, "--out", run,
            "--target", "q_proj,v_proj,fc1,lm_head", "--max-steps", "16", "--eval-every", "8", .. Small]);
        Assert.That(code, Is.EqualTo(0), error);
        Assert.That(output, Does.Contain("done: 16 steps"));
        foreach (var file in new[] { "adapter_config.json", "adapter_model.safetensors", "metrics.jsonl", "loss.png", "checkpoints/step-16/optimizer.safetensors" })
            Assert.That(File.Exists(Path.Combine(run, file)), Is.True, file);
        Assert.That(File.ReadAllBytes(Path.Combine(run, "loss.png"))[1..4], Is.EqualTo("PNG"u8.ToArray()));
        var validation = Metrics(run).Where(m => m.TryGetProperty("validation_loss", out _)).Select(m => m.GetProperty("validation_loss").GetDouble()).ToList();
        Assert.That(validation, Has.Count.EqualTo(3));
        Assert.That(validation[^1], Is.LessThan(validation[0] - 0.5), "validation loss falls visibly");
        Assert.That(PeftAdapterConfig.Read(Path.Combine(run, "adapter_config.json")).TargetModules, Is.EquivalentTo(new[] { "q_proj", "v_proj", "fc1", "lm_head" }));
    }

    [Test]
    public void ResumingFromACheckpointRepeatsTheUninterruptedLosses()
    {
        string whole = Path.Combine(Temp, "whole"), resumed = Path.Combine(Temp, "resumed");
        string[] common = ["finetune", "--preset", "attention-refinement", "--layers", "2-3", "--max-steps", "6", "--save-every", "3", "--dropout", "0.1", "--grad-accum", "2", .. Small];
        Assert.That(Phi2([.. common, "--out", whole]).Code, Is.EqualTo(0));
        var (code, _, error) = Phi2([.. common, "--out", resumed, "--resume", Path.Combine(whole, "checkpoints", "step-3")]);
        Assert.That(code, Is.EqualTo(0), error);
        Assert.That(error, Does.Contain("resumed from").And.Contain("at step 3 of 6"));
        double[] Losses(string run) => Metrics(run).Where(m => m.TryGetProperty("Loss", out _)).Select(m => m.GetProperty("Loss").GetDouble()).ToArray();
        Assert.That(Losses(resumed), Is.EqualTo(Losses(whole)[3..]));
    }

    [Test]
    public void ANewTokenTrainsInAnUnusedRowAndIsGenerated()
    {
        string data = Path.Combine(Temp, "data.jsonl"), run = Path.Combine(Temp, "run");
        File.WriteAllLines(data, Enumerable.Repeat("{\"text\": \"And the Zorbl said unto Moses, the Zorbl is here. And Moses said unto the Zorbl, go.\"}", 40));
        var (code, _, error) = Phi2(["finetune", "--data", data, "--out", run, "--new-tokens", "Zorbl", "--target", "q_proj,v_proj", "--epochs", "5", "--warmup", "0",
            "--batch-size", "4", "--max-length", "64", "--lr", "1e-2"]);
        Assert.That(code, Is.EqualTo(0), error);
        Assert.That(error, Does.Contain("new token \"Zorbl\" -> id 512").And.Contain("model.embed_tokens trains with LoRA"));

        // Load it back as a user would: base + adapter + its added tokens; greedy decoding then produces the new token.
        using var model = EmbeddedDefault.CreateModel(CpuBackend.Default);
        var tokenizer = EmbeddedDefault.Tokenizer();
        Assert.That(NewTokens.Apply(tokenizer, run), Is.EqualTo(1));
        using var lora = PeftAdapter.Load(model, run);
        var prompt = tokenizer.Encode("And Moses said unto the");
        Assert.That(tokenizer.Encode("the Zorbl"), Does.Contain(512), "the tokenizer uses the new token");
        // Added tokens match as whole words, so " Zorbl" is a space token and then the new one (as with HF added tokens).
        var generated = prompt.ToList();
        for (int step = 0; step < 2; step++)
        {
            using var scope = TensorScope.Begin();
            var logits = model.Forward(model.CreateInputIds(generated.ToArray())).ToSingleArray();
            int vocab = model.Config.VocabSize, last = generated.Count - 1;
            generated.Add(Enumerable.Range(0, vocab).MaxBy(v => logits[last * vocab + v]));
        }
        Assert.That(generated[^1], Is.EqualTo(512), $"greedy continuation: {string.Join(" | ", generated.Skip(prompt.Length).Select(tokenizer.TokenText))}");
        Assert.That(tokenizer.Decode(generated), Is.EqualTo("And Moses said unto the Zorbl"));
    }

    [TestCase("{\"text\": \"fine\"}\nnot json\n", "data.jsonl:2")]
    [TestCase("\n\n", "no usable example")]
    public void BadDataIsExitCode2WithTheFileAndLine(string content, string mentioned)
    {
        string data = Path.Combine(Temp, "data.jsonl");
        File.WriteAllText(data, content);
        var (code, _, error) = Phi2(["finetune", "--data", data, "--out", Path.Combine(Temp, "run"), .. Small]);
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error, Does.Contain(mentioned));
    }

    [TestCase("--preset", "poetry", "valid presets")]
    [TestCase("--target", "o_proj", "unknown module \"o_proj\"")]
    [TestCase("--layers", "9", "outside this model's layers 0-3")]
    [TestCase("--r", "0", "--r must be a positive whole number")]
    [TestCase("--schedule", "wavy", "--schedule")]
    public void BadSettingsAreExitCode2AndListWhatIsValid(string option, string value, string mentioned)
    {
        var (code, _, error) = Phi2(["finetune", "--out", Path.Combine(Temp, "run"), option, value, .. Small]);
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error, Does.Contain(mentioned));
    }
}
