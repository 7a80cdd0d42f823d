using NUnit.Framework;
using Phi2Native.Backends.Cpu;
using Phi2Native.Embedded;
using Phi2Native.FineTuning;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Cli;

/// <summary>`phi2 generate` and `phi2 tokenize` on the embedded model.</summary>
[TestFixture]
public class GenerateCommandTests : TemporaryDirectoryTest
{
    [Test]
    public void GreedyIdsEqualTheArgmaxOfRepeatedFullForwards()
    {
        int[] prompt = [40, 77, 258, 65];
        var (code, output, error) = Phi2("generate", "--ids", string.Join(",", prompt), "--max-tokens", "6", "--print-ids");
        Assert.That(code, Is.EqualTo(0), error);
        var printed = output.Trim().Split(',').Select(int.Parse).ToArray();

        // The reference: no cache, one full forward per new token, argmax with the lowest id on ties.
        using var model = EmbeddedDefault.CreateModel(CpuBackend.Default);
        var ids = prompt.ToList();
        for (int n = 0; n < 6; n++)
        {
            using var scope = TensorScope.Begin();
            var logits = model.Forward(model.CreateInputIds(ids.ToArray())).ToSingleArray();
            int vocab = model.Config.VocabSize, last = ids.Count - 1, best = 0;
            for (int v = 1; v < vocab; v++)
                if (logits[last * vocab + v] > logits[last * vocab + best]) best = v;
            ids.Add(best);
        }
        Assert.That(printed, Is.EqualTo(ids.Skip(prompt.Length).ToArray()));
        Assert.That(error, Does.Contain("tokens/s"), "speed goes to standard error");
    }

    [Test]
    public void SamplingRepeatsWithItsSeedAndTextStreamsToStandardOutput()
    {
        string[] args = ["generate", "--prompt", "And God said", "--max-tokens", "8", "--temperature", "0.9", "--top-k", "40", "--top-p", "0.95", "--seed", "11"];
        var first = Phi2(args);
        var second = Phi2(args);
        Assert.That(first.Code, Is.EqualTo(0), first.Error);
        Assert.That(second.Output, Is.EqualTo(first.Output));
        Assert.That(first.Output, Is.Not.Empty);
    }

    [Test]
    public void EachSamplingOptionReachesTheSampler()
    {
        // Explicitly the untrained model (random weights): its next-token distribution is nearly flat, so a draw at
        // temperature 1 almost never repeats the argmax 12 times, and any option that is dropped on the way shows as a
        // changed sequence. (The pretrained default is sure of many next tokens, where sampling may repeat the argmax.)
        string model = EmbeddedDefault.WriteRandomModelFolder(Path.Combine(Temp, "random"), EmbeddedDefault.DefaultSeed);
        string[] Ids(params string[] sampling)
        {
            var (code, output, error) = Phi2(["generate", "--model", model, "--prompt", "And God said", "--max-tokens", "12", "--print-ids", .. sampling]);
            Assert.That(code, Is.EqualTo(0), error);
            return output.Trim().Split(',');
        }
        var greedy = Ids();
        var free = Ids("--temperature", "1", "--seed", "3");
        Assert.That(free, Is.Not.EqualTo(greedy), "temperature 1 samples");
        Assert.That(Ids("--temperature", "1", "--seed", "3", "--top-k", "1"), Is.EqualTo(greedy), "--top-k 1 keeps only the argmax");
        Assert.That(Ids("--temperature", "1", "--seed", "3", "--top-p", "1e-9"), Is.EqualTo(greedy), "--top-p near 0 keeps only the argmax");
        Assert.That(Ids("--temperature", "1e-4", "--seed", "3"), Is.EqualTo(greedy), "a temperature near 0 sharpens to the argmax");
        Assert.That(Ids("--temperature", "1", "--seed", "4"), Is.Not.EqualTo(free), "--seed changes the draws");
        Assert.That(Ids("--temperature", "1", "--seed", "3", "--top-k", "2"), Is.Not.EqualTo(free).And.Not.EqualTo(greedy), "--top-k 2 samples among two");
    }

    [TestCase("--temperature", "-1", "temperature")]
    [TestCase("--top-p", "1.5", "top-p")]
    [TestCase("--top-p", "0", "top-p")]
    public void BadSamplingSettingsAreExitCode2(string option, string value, string mentioned)
    {
        var (code, _, error) = Phi2("generate", "--prompt", "In the", option, value);
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error, Does.Contain(mentioned));
    }

    [Test]
    public void APromptLongerThanTheContextIsAClearErrorUnlessTruncationIsAsked()
    {
        string ids = string.Join(",", Enumerable.Repeat(65, 300));   // the embedded model has 256 positions
        var (code, _, error) = Phi2("generate", "--ids", ids, "--print-ids", "--max-tokens", "2");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error, Does.Contain("max_position_embeddings (256)").And.Contain("--truncate"));
        var truncated = Phi2("generate", "--ids", ids, "--print-ids", "--max-tokens", "2", "--truncate");
        Assert.That(truncated.Code, Is.EqualTo(0), truncated.Error);
        Assert.That(truncated.Error, Does.Contain("keeping its last 255"));
    }

    [Test]
    public void AFolderWithoutTokenizerFilesAnnouncesTheFallback()
    {
        // tiny-f32 has only config.json and weights: text goes through GPT-2's tokenizer, said on standard error.
        var (code, _, error) = Phi2("generate", "--model", Fixtures.ModelDirectory("f32"), "--prompt", "Hi", "--max-tokens", "2");
        Assert.That(error, Does.Contain("using GPT-2's tokenizer"));
        // GPT-2's ids for "Hi" lie beyond this tiny model's 203 rows: a clear error, not a crash.
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error, Does.Contain("outside the vocabulary"));
    }

    [Test]
    public void TokenizePrintsIdsAndPieces()
    {
        var (code, output, error) = Phi2("tokenize", "--text", "In the  beginning");
        Assert.That(code, Is.EqualTo(0), error);
        var expected = EmbeddedDefault.Tokenizer().Encode("In the  beginning");
        var lines = output.TrimEnd().Split('\n');
        Assert.That(lines[^1], Is.EqualTo(string.Join(",", expected)));
        Assert.That(lines, Has.Length.EqualTo(expected.Length + 1));
        Assert.That(lines[0], Does.StartWith($"{expected[0]}\t"));
    }
}
