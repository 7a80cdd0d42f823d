using NUnit.Framework;
using Phi2Native.Cli;
using Phi2Native.Embedded;
using Phi2Native.FineTuning;
using Phi2Native.IO;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Cli;

/// <summary>`phi2 trace` end to end, in process: its output file against PyTorch, and its errors.</summary>
[TestFixture]
public class TraceCommandTests : TemporaryDirectoryTest
{

    [TestCaseSource(typeof(Models.GoldenTests), nameof(Models.GoldenTests.Variants))]
    public void TraceWithGradsWritesWhatPyTorchComputes(string variant)
    {
        using var golden = Fixtures.OpenGolden(variant);
        string ids = string.Join(",", golden.ReadInt32("trace.input_ids"));
        string outPath = Path.Combine(Temp, "trace.safetensors");
        var (code, _, error) = Phi2("trace", "--model", Fixtures.ModelDirectory(variant), "--ids", ids, "--out", outPath, "--grads");
        Assert.That(code, Is.EqualTo(0), error);

        using var trace = SafeTensorsFile.Open(outPath);
        var expectedNames = golden.Tensors.Select(t => t.Name).Where(n => n.StartsWith("trace.", StringComparison.Ordinal) && n != "trace.input_ids")
            .Select(n => n["trace.".Length..]);
        Assert.That(trace.Tensors.Select(t => t.Name), Is.EquivalentTo(expectedNames), "trace writes exactly logits, loss and grad.<name>");
        Assert.That(trace.Get("logits").Shape, Is.EqualTo(golden.Get("trace.logits").Shape));
        foreach (var tensor in trace.Tensors)
        {
            Assert.That(tensor.DTypeName, Is.EqualTo("F32"), tensor.Name);
            var tolerance = tensor.Name.StartsWith("grad.", StringComparison.Ordinal) ? Tolerance.Gradient(Tensors.DType.F32) : Tolerance.Forward(Tensors.DType.F32);
            TensorAssert.Close(tensor.Name, golden.ReadAsSingle("trace." + tensor.Name), trace.ReadAsSingle(tensor.Name), tolerance, Fixtures.RegenerateHint);
        }
    }

    [Test]
    public void TraceWithoutGradsWritesOnlyLogitsAndLoss()
    {
        string outPath = Path.Combine(Temp, "t.safetensors");
        var (code, _, error) = Phi2("trace", "--model", Fixtures.ModelDirectory("f32"), "--ids", "1,2,3", "--out", outPath);
        Assert.That(code, Is.EqualTo(0), error);
        using var trace = SafeTensorsFile.Open(outPath);
        Assert.That(trace.Tensors.Select(t => t.Name), Is.EquivalentTo(new[] { "logits", "loss" }));
        Assert.That(trace.Get("logits").Shape, Is.EqualTo(new long[] { 3, 203 }));
    }

    [Test]
    public void TextIsTokenizedWithTheModelsTokenizerAndTracesAsItsIds()
    {
        const string Text = "And God said, Let there be light";
        int[] expectedIds = EmbeddedDefault.Tokenizer().Encode(Text);
        Assert.That(expectedIds, Has.Length.GreaterThan(2));
        string fromText = Path.Combine(Temp, "text.safetensors"), fromIds = Path.Combine(Temp, "ids.safetensors");
        // No --model: the embedded model and its tokenizer.
        var (code, _, error) = Phi2("trace", "--text", Text, "--out", fromText);
        Assert.That(code, Is.EqualTo(0), error);
        Assert.That(error, Does.Contain(string.Join(",", expectedIds)), "the ids go to standard error");
        var ids = Phi2("trace", "--ids", string.Join(",", expectedIds), "--out", fromIds);
        Assert.That(ids.Code, Is.EqualTo(0), ids.Error);

        using SafeTensorsFile text = SafeTensorsFile.Open(fromText), direct = SafeTensorsFile.Open(fromIds);
        Assert.That(text.Get("logits").Shape, Is.EqualTo(new long[] { expectedIds.Length, EmbeddedDefault.Config.VocabSize }));
        Assert.That(text.ReadAsSingle("logits"), Is.EqualTo(direct.ReadAsSingle("logits")));
        Assert.That(text.ReadAsSingle("loss"), Is.EqualTo(direct.ReadAsSingle("loss")));
    }

    [TestCase(new string[0], "one of them is required")]
    [TestCase(new[] { "--ids", "1,2", "--text", "In the beginning" }, "not both")]
    [TestCase(new[] { "--text", "I" }, "at least 2")]
    public void TextAndIdsAreExactlyOneOfTwo(string[] sequence, string mentioned)
    {
        string outPath = Path.Combine(Temp, "o.safetensors");
        var (code, _, error) = Phi2(["trace", .. sequence, "--out", outPath]);
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error, Does.Contain(mentioned));
        Assert.That(error, Does.Contain(sequence.Length == 2 && sequence[0] == "--text" ? "--text" : "--ids"));
        Assert.That(error, Does.Not.Contain("   at "), "no stack trace for bad input");
        Assert.That(File.Exists(outPath), Is.False, "nothing written on failure");
    }

    [TestCase("--model", "does-not-exist", "does-not-exist")]
    [TestCase("--ids", "1,2,999", "999")]
    [TestCase("--ids", "7", "at least 2")]
    [TestCase("--ids", "1,x,3", "\"x\"")]
    public void BadInputGivesOneMessageAndExitCode2(string option, string value, string mentioned)
    {
        var args = new Dictionary<string, string>
        {
            ["--model"] = Fixtures.ModelDirectory("f32"), ["--ids"] = "1,2,3", ["--out"] = Path.Combine(Temp, "o.safetensors"),
        };
        args[option] = option == "--model" ? Path.Combine(Temp, value) : value;
        var (code, _, error) = Phi2(["trace", .. args.SelectMany(kv => new[] { kv.Key, kv.Value })]);
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error, Does.Contain(mentioned));
        Assert.That(error, Does.Not.Contain("   at "), "no stack trace for bad input");
        Assert.That(File.Exists(args["--out"]), Is.False, "nothing written on failure");
    }

    [Test]
    public void CorruptWeightsGiveExitCode2NamingTheFile()
    {
        string model = Path.Combine(Temp, "model");
        Directory.CreateDirectory(model);
        File.Copy(Path.Combine(Fixtures.ModelDirectory("f32"), "config.json"), Path.Combine(model, "config.json"));
        var bytes = File.ReadAllBytes(Path.Combine(Fixtures.ModelDirectory("f32"), "model.safetensors"));
        File.WriteAllBytes(Path.Combine(model, "model.safetensors"), bytes[..(bytes.Length / 2)]);
        var (code, _, error) = Phi2("trace", "--model", model, "--ids", "1,2", "--out", Path.Combine(Temp, "o.safetensors"));
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error, Does.Contain("model.safetensors"));
    }

    [Test]
    public void InconsistentConfigGivesExitCode2NamingTheFields()
    {
        string model = Path.Combine(Temp, "model");
        Directory.CreateDirectory(model);
        string config = File.ReadAllText(Path.Combine(Fixtures.ModelDirectory("f32"), "config.json"));
        File.WriteAllText(Path.Combine(model, "config.json"), config.Replace("\"hidden_size\": 60", "\"hidden_size\": 61"));
        File.Copy(Path.Combine(Fixtures.ModelDirectory("f32"), "model.safetensors"), Path.Combine(model, "model.safetensors"));
        var (code, _, error) = Phi2("trace", "--model", model, "--ids", "1,2", "--out", Path.Combine(Temp, "o.safetensors"));
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error, Does.Contain("hidden_size 61 is not divisible by num_attention_heads 2"));
    }

    [Test]
    public void MissingRequiredOptionIsAUsageErrorWithExitCode2()
    {
        var (code, _, error) = Phi2("trace", "--ids", "1,2");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error, Does.Contain("--out"));
    }
}
