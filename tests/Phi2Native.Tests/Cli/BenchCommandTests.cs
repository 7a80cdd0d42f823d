using System.Text.Json;
using System.Text.RegularExpressions;
using NUnit.Framework;
using Phi2Native.Embedded;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Cli;

/// <summary>
/// `phi2 bench`: one JSON object per case with exactly the README's fields; the counts in it (repetitions, tokens,
/// parameters, trainable parameters, memory floors) against figures derived here from the config; the statistics
/// against the times it reports; bad options are one message and exit 2.
/// </summary>
[TestFixture]
public partial class BenchCommandTests : TemporaryDirectoryTest
{
    private static List<JsonElement> Json(string output) =>
        [.. output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(line => JsonDocument.Parse(line).RootElement)];

    /// <summary>The field names of README.md's table under "Benchmarks for harnesses".</summary>
    private static List<string> ReadmeFields()
    {
        string readme = File.ReadAllText(Path.Combine(Fixtures.RepositoryRoot, "README.md"));
        int start = readme.IndexOf("| field | meaning |", StringComparison.Ordinal);
        Assert.That(start, Is.GreaterThan(0), "README.md has the phi2 bench field table");
        var fields = new List<string>();
        foreach (string line in readme[start..].Split('\n').Skip(2).TakeWhile(l => l.StartsWith('|')))
            fields.AddRange(FieldName().Matches(line.Split('|')[1]).Select(m => m.Groups[1].Value));
        return fields;
    }

    [Test]
    public void EachCaseIsOneJsonLineWithTheReadmesFieldsAndCountsDerivedFromTheConfig()
    {
        const int batch = 2, seq = 24, repeat = 3;
        var (code, output, error) = Phi2("bench", "train", "lora", "decode", "prefill", "--batch", $"{batch}", "--seq", $"{seq}",
            "--repeat", $"{repeat}", "--warmup", "1", "--json");
        Assert.That(code, Is.EqualTo(0), error);
        var cases = Json(output);
        Assert.That(cases.Select(c => c.GetProperty("what").GetString()), Is.EqualTo(new[] { "train", "lora", "decode", "prefill" }));

        var config = EmbeddedDefault.Config;
        long c = config.HiddenSize, inner = config.IntermediateSize, v = config.VocabSize, layers = config.NumHiddenLayers;
        // embed_tokens, lm_head (weight and bias), final LayerNorm; per layer: LayerNorm, q/k/v/dense, fc1, fc2 with biases.
        long parameters = v * c + (v * c + v) + 2 * c + layers * (2 * c + 4 * (c * c + c) + (inner * c + inner) + (c * inner + c));
        // r 16 on q, k, v, dense (C -> C) and fc1 (C -> I), fc2 (I -> C): A [r, in] and B [out, r] each.
        long adapters = layers * 16 * (4 * 2 * c + 2 * (c + inner));
        foreach (var json in cases)
        {
            string what = json.GetProperty("what").GetString()!;
            Assert.That(json.EnumerateObject().Select(p => p.Name), Is.EqualTo(ReadmeFields()), $"{what}: the fields, in the README's order");
            Assert.That(json.GetProperty("schema").GetInt32(), Is.EqualTo(1));
            Assert.That(json.GetProperty("device").GetString(), Is.EqualTo("cpu"));
            Assert.That(json.GetProperty("model").GetString(), Is.EqualTo("embedded"));
            Assert.That(json.GetProperty("layers").GetInt32(), Is.EqualTo(layers));
            Assert.That(json.GetProperty("parameters").GetInt64(), Is.EqualTo(parameters), what);
            Assert.That(json.GetProperty("trainable_parameters").GetInt64(), Is.EqualTo(what switch { "train" => parameters, "lora" => adapters, _ => 0 }), what);
            Assert.That(json.GetProperty("preset").ValueKind, Is.EqualTo(what == "lora" ? JsonValueKind.String : JsonValueKind.Null));
            Assert.That(json.GetProperty("repeat").GetInt32(), Is.EqualTo(repeat));
            double[] times = [.. json.GetProperty("times_ms").EnumerateArray().Select(t => t.GetDouble())];
            Assert.That(times, Has.Length.EqualTo(repeat).And.All.GreaterThan(0));
            double median = times.Order().ElementAt(repeat / 2);
            Assert.That(json.GetProperty("median_ms").GetDouble(), Is.EqualTo(median));
            Assert.That(json.GetProperty("min_ms").GetDouble(), Is.EqualTo(times.Min()));
            Assert.That(json.GetProperty("max_ms").GetDouble(), Is.EqualTo(times.Max()));
            long tokens = what == "decode" ? batch : batch * seq;
            Assert.That(json.GetProperty("tokens_per_rep").GetInt64(), Is.EqualTo(tokens), what);
            Assert.That(json.GetProperty("tokens_per_s").GetDouble(), Is.EqualTo(tokens / (median / 1000)).Within(1e-9).Percent, what);
            // fp32 weights are resident throughout; a step also keeps AdamW's two moments per trainable parameter.
            long trainable = json.GetProperty("trainable_parameters").GetInt64();
            long resident = json.GetProperty("resident_bytes").GetInt64();
            Assert.That(resident, Is.GreaterThanOrEqualTo(4 * (parameters + 2 * trainable)), what);
            Assert.That(json.GetProperty("peak_bytes").GetInt64(), Is.GreaterThanOrEqualTo(resident), what);
            Assert.That(json.GetProperty("modelled_h100_ms").ValueKind, Is.EqualTo(JsonValueKind.Null), "the CPU backend's ops declare no GPU costs");
        }
        Assert.That(error, Does.Contain("bench lora: 1 warm-up + 3 measured"));
    }

    [Test]
    public void WithoutJsonTheCasesPrintAsOneTable()
    {
        var (code, output, error) = Phi2("bench", "lora", "prefill", "--seq", "16", "--repeat", "1", "--warmup", "0", "--preset", "fluency");
        Assert.That(code, Is.EqualTo(2), "--preset applies to lora only");
        Assert.That(error, Does.Contain("--preset applies to lora only, not prefill"));

        (code, output, error) = Phi2("bench", "lora", "prefill", "--seq", "16", "--repeat", "1", "--warmup", "0");
        Assert.That(code, Is.EqualTo(0), error);
        Assert.That(output, Does.Contain("lora (update-knowledge, r 16)").And.Contain("prefill").And.Contain("tokens/s").And.Contain("peak memory"));
    }

    [TestCase(new[] { "bench", "train", "--batch", "0" }, "--batch must be at least 1, got 0")]
    [TestCase(new[] { "bench", "train", "--seq", "1" }, "--seq must be at least 2 for train")]
    [TestCase(new[] { "bench", "decode", "--repeat", "0" }, "--repeat must be at least 1, got 0")]
    [TestCase(new[] { "bench", "decode", "--warmup", "-1" }, "--warmup must be at least 0, got -1")]
    [TestCase(new[] { "bench", "decode", "--repeat", "NaN" }, "--repeat expects a whole number")]
    [TestCase(new[] { "bench", "sprint" }, "workload \"sprint\" is not one of train, lora, decode, prefill")]
    [TestCase(new[] { "bench", "lora", "--config", "gpt2" }, "--config \"gpt2\" is not one of embedded, phi2")]
    [TestCase(new[] { "bench", "lora", "--preset", "nope" }, "unknown preset \"nope\"")]
    [TestCase(new[] { "bench", "lora", "--layers", "0" }, "--layers must be at least 1, got 0")]
    [TestCase(new[] { "bench", "lora", "--layers", "5000" }, "--layers 5000: ")]
    [TestCase(new[] { "bench", "lora", "--model", ".", "--config", "phi2" }, "--model and --config exclude each other")]
    [TestCase(new[] { "bench", "lora", "--model", ".", "--layers", "2" }, "--layers applies to --config only")]
    [TestCase(new[] { "bench", "prefill", "--seq", "257" }, "--seq 257 exceeds the model's 256 positions")]
    [TestCase(new[] { "bench", "decode", "--seq", "250", "--repeat", "6" }, "--seq 250 + --warmup 1 + --repeat 6 decoded positions exceed the model's 256")]
    [TestCase(new[] { "bench", "lora", "--dtype", "bf16" }, "--dtype bf16 on --device cpu")]
    [TestCase(new[] { "bench", "decode", "--model", "no-such-folder" }, "no-such-folder")]
    public void BadOptionsAreOneMessageAndExitCode2(string[] args, string message)
    {
        var (code, output, error) = Phi2(args);
        Assert.That(code, Is.EqualTo(2), error);
        Assert.That(error, Does.Contain(message));
        Assert.That(output, Is.Empty);
    }

    [Test, Category("Emulated")]
    public void TheCasesRunOnTheEmulatedDevice()
    {
        var (code, output, error) = Phi2("bench", "lora", "decode", "--device", "emulated", "--seq", "8", "--repeat", "1", "--warmup", "1", "--json");
        Assert.That(code, Is.EqualTo(0), error);
        var cases = Json(output);
        Assert.That(cases.Select(c => c.GetProperty("device").GetString()), Is.EqualTo(new[] { "emulated", "emulated" }));
        Assert.That(cases.Select(c => c.GetProperty("tokens_per_rep").GetInt64()), Is.EqualTo(new[] { 8L, 1L }));
        Assert.That(cases.All(c => c.GetProperty("peak_bytes").GetInt64() >= c.GetProperty("resident_bytes").GetInt64() && c.GetProperty("resident_bytes").GetInt64() > 0));
        foreach (var json in cases)
        {
            // The warm-up repetition priced by the roofline model: at least 4 us a launch, and an H200 (more bandwidth,
            // the same compute) never slower.
            double h100 = json.GetProperty("modelled_h100_ms").GetDouble(), h200 = json.GetProperty("modelled_h200_ms").GetDouble();
            Assert.That(h100, Is.GreaterThan(0.004));
            Assert.That(h200, Is.GreaterThan(0).And.LessThanOrEqualTo(h100));
        }
    }

    [Test, Category("Emulated")]
    public void WithoutAWarmUpNothingIsModelled()
    {
        var (code, output, error) = Phi2("bench", "decode", "--device", "emulated", "--seq", "8", "--repeat", "1", "--warmup", "0", "--json");
        Assert.That(code, Is.EqualTo(0), error);
        Assert.That(Json(output).Single().GetProperty("modelled_h100_ms").ValueKind, Is.EqualTo(JsonValueKind.Null));
    }

    [GeneratedRegex("`([a-z0-9_]+)`")]
    private static partial Regex FieldName();
}
