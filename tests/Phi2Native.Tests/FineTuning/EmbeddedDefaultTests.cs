using NUnit.Framework;
using Phi2Native.Autograd;
using Phi2Native.Backends.Cpu;
using Phi2Native.Embedded;
using Phi2Native.FineTuning;
using Phi2Native.FineTuning.Data;
using Phi2Native.FineTuning.Optim;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;
using Phi2Native.Text;

namespace Phi2Native.Tests.FineTuning;

/// <summary>
/// The embedded default model: its resources load, its tokenizer round-trips the text, the model folder it writes
/// reads back through the normal loaders with the same logits, its JSONL files load, and the split is fixed.
/// </summary>
[TestFixture]
public class EmbeddedDefaultTests
{
    // What make_tokenizer.py prints for the committed vocabulary ("149340 tokens for 367215 bytes"): the script's
    // own BPE encoder, with its copy of GPT-2's pre-tokenizer. Equal counts show that Phi2Tokenizer splits the text
    // as the merges were trained; regenerate this number with the files if the vocabulary changes.
    private const int ScriptTokenCount = 149340;

    private string _temp = null!;

    [SetUp] public void SetUp() => _temp = Fixtures.TemporaryDirectory();

    [TearDown] public void TearDown() => Directory.Delete(_temp, recursive: true);

    [Test]
    public void ConfigHasPhi2sStructureAndFitsTheTokenizer()
    {
        var config = EmbeddedDefault.Config;
        var tokenizer = EmbeddedDefault.Tokenizer();
        Assert.Multiple(() =>
        {
            Assert.That(config.VocabSize, Is.GreaterThanOrEqualTo(tokenizer.VocabularySize), "every id of the tokenizer has an embedding row");
            // Like Phi-2 (51200 rows, 50295 used), unused padded rows are left for new tokens.
            Assert.That(config.VocabSize - tokenizer.VocabularySize, Is.EqualTo(64));
            Assert.That(config.EosTokenId, Is.EqualTo(tokenizer.EndOfTextId));
            Assert.That(config.BosTokenId, Is.EqualTo(tokenizer.EndOfTextId));
            Assert.That(config.RotaryDim, Is.EqualTo((int)(0.4 * config.HeadDim)), "partial_rotary_factor 0.4, as Phi-2");
            Assert.That(config.RotaryDim, Is.GreaterThan(0));
            Assert.That(config.IsPhiMsft, Is.False);
            Assert.That(config.MaxPositionEmbeddings, Is.GreaterThanOrEqualTo(EmbeddedDefault.RecommendedTraining.MaxLength));
        });
    }

    [Test]
    public void TextIsGenesisThroughExodus()
    {
        string text = EmbeddedDefault.FullText;
        Assert.That(text, Does.StartWith("Genesis 1\nIn the beginning God created the heaven and the earth.\n"));
        Assert.That(text.TrimEnd(), Does.EndWith("throughout all their journeys."));
        Assert.That(text.Length, Is.InRange(300_000, 400_000));
        Assert.That(text.All(c => c == '\n' || (c >= ' ' && c <= '~')), Is.True, "plain ASCII, no tabs or carriage returns");
        Assert.That(EmbeddedDefault.Paragraphs(text), Has.Length.EqualTo(90), "50 chapters of Genesis and 40 of Exodus");
    }

    [Test]
    public void TokenizerRoundTripsTheWholeText()
    {
        var tokenizer = EmbeddedDefault.Tokenizer();
        string text = EmbeddedDefault.FullText;
        int[] ids = tokenizer.Encode(text);
        Assert.That(tokenizer.Decode(ids), Is.EqualTo(text));
        Assert.That(ids.Length, Is.EqualTo(ScriptTokenCount), "the C# tokenizer splits the text as make_tokenizer.py trained it");
        Assert.That(ids, Has.All.LessThan(tokenizer.EndOfTextId!.Value), "the text holds no whole token");
    }

    [Test]
    public void TokenizerEncodesAPassageWithItsMergesAndItsWholeTokens()
    {
        var tokenizer = EmbeddedDefault.Tokenizer();
        string passage = "And God said, Let there be light: and there was light.";
        int[] ids = tokenizer.Encode(passage);
        Assert.That(tokenizer.Decode(ids), Is.EqualTo(passage));
        Assert.That(ids.Length, Is.LessThan(passage.Length / 2), "the merges shorten the text");
        Assert.That(tokenizer.EncodeWithPieces(" Pharaoh").Select(p => p.Piece), Is.EqualTo(new[] { "ĠPharaoh" }));

        // A vocabulary not numbered as Phi-2's must bring its own run tokens; these are ids 510 and 511.
        int end = tokenizer.EndOfTextId!.Value;
        int[] code = tokenizer.Encode("a  b\t\tc<|endoftext|>");
        Assert.That(code, Does.Contain(end + 1).And.Contain(end + 2).And.Contain(end));
        Assert.That(tokenizer.Decode(code), Is.EqualTo("a  b\t\tc<|endoftext|>"));
        Assert.That(tokenizer.Decode(tokenizer.Encode("x      y")), Is.EqualTo("x      y"), "a run of six spaces");
        Assert.That(tokenizer.Decode(tokenizer.Encode("Dieu créa — ☀")), Is.EqualTo("Dieu créa — ☀"), "bytes outside the text's ASCII");
    }

    [Test]
    public void SplitIsDeterministicDisjointAndCoversTheText()
    {
        var training = EmbeddedDefault.TrainingParagraphs;
        var validation = EmbeddedDefault.ValidationParagraphs;
        Assert.That(validation.Select(p => p.Split('\n')[0]), Is.EqualTo(new[] { "Genesis 20", "Genesis 40", "Exodus 10", "Exodus 30" }));
        Assert.That(training, Has.Count.EqualTo(86));
        Assert.That(training.Intersect(validation), Is.Empty);

        // Put back in text order, the two parts are the whole text's paragraphs.
        var paragraphs = EmbeddedDefault.Paragraphs(EmbeddedDefault.FullText);
        var merged = new List<string>();
        int t = 0, v = 0;
        for (int i = 0; i < paragraphs.Length; i++) merged.Add(EmbeddedDefault.IsValidation(i) ? validation[v++] : training[t++]);
        Assert.That(merged, Is.EqualTo(paragraphs));

        Assert.That(EmbeddedDefault.TrainingText, Is.EqualTo(string.Join("\n\n", training)));
        Assert.That(EmbeddedDefault.ValidationText, Is.EqualTo(string.Join("\n\n", validation)));
        Assert.That(EmbeddedDefault.TrainingText, Does.Not.Contain("Genesis 20\n").And.Not.Contain("Exodus 30\n"));
        Assert.That(EmbeddedDefault.TrainingText, Does.StartWith("Genesis 1\n").And.Contain("Genesis 21\n"));
        Assert.That(EmbeddedDefault.ValidationText, Does.StartWith("Genesis 20\nAnd Abraham journeyed from thence"));
    }

    [Test]
    public void ModelFolderHoldsTheShippedBaseAndLoadsThroughTheNormalLoadersWithTheSameLogits()
    {
        string folder = EmbeddedDefault.WriteModelFolder(Path.Combine(_temp, "model"));
        Assert.That(Directory.GetFiles(folder).Select(Path.GetFileName).Order(),
            Is.EqualTo(new[] { "added_tokens.json", "config.json", "merges.txt", "model.safetensors", "vocab.json" }));
        Assert.That(EmbeddedBase.Sha256(Path.Combine(folder, "model.safetensors")), Is.EqualTo(EmbeddedBase.ShippedSha256), "the shipped weights, byte for byte");
        AssertSameLogits(folder, backend => EmbeddedDefault.CreateModel(backend));
    }

    [Test]
    public void RandomModelFolderLoadsThroughTheNormalLoadersWithTheSameLogits()
    {
        string folder = EmbeddedDefault.WriteRandomModelFolder(Path.Combine(_temp, "model"), seed: 7);
        AssertSameLogits(folder, backend => EmbeddedDefault.CreateRandomModel(backend, seed: 7));
    }

    private static void AssertSameLogits(string folder, Func<IBackend, Phi2Model> create)
    {
        var backend = CpuBackend.Default;
        using var loaded = Phi2Checkpoint.Load(folder, backend);
        using var created = create(backend);
        Assert.That(loaded.Config, Is.EqualTo(EmbeddedDefault.Config));

        var tokenizer = TextTokenizer.FromModelFolder(folder);
        string passage = EmbeddedDefault.ValidationParagraphs[0][..400];
        int[] ids = tokenizer.Encode(passage);
        Assert.That(ids, Is.EqualTo(EmbeddedDefault.Tokenizer().Encode(passage)));

        using var scope = TensorScope.Begin();
        float[] expected = created.Forward(created.CreateInputIds(ids)).ToSingleArray();
        float[] actual = loaded.Forward(loaded.CreateInputIds(ids)).ToSingleArray();
        Assert.That(actual, Is.EqualTo(expected), "F32 weights written and read back exactly");
        Assert.That(expected.Length, Is.EqualTo(ids.Length * EmbeddedDefault.Config.VocabSize));
    }

    [Test]
    public void SeedFixesTheRandomWeights()
    {
        var backend = CpuBackend.Default;
        using var a = EmbeddedDefault.CreateRandomModel(backend);
        using var b = EmbeddedDefault.CreateRandomModel(backend, EmbeddedDefault.DefaultSeed);
        using var c = EmbeddedDefault.CreateRandomModel(backend, EmbeddedDefault.DefaultSeed + 1);
        using var pretrained = EmbeddedDefault.CreateModel(backend);
        float[] Weights(Phi2Model model) => model.Layers[0].SelfAttention.Projections().First().Parameters().First().ToSingleArray();
        Assert.That(Weights(a), Is.EqualTo(Weights(b)));
        Assert.That(Weights(a), Is.Not.EqualTo(Weights(c)));
        Assert.That(Weights(pretrained), Is.Not.EqualTo(Weights(a)), "the default is the trained base, not the seed it started from");
    }

    [Test]
    public void JsonlFilesLoadThroughJsonlDataset()
    {
        var tokenizer = EmbeddedDefault.Tokenizer();
        int end = tokenizer.EndOfTextId!.Value;
        var options = new JsonlOptions { EndOfTextId = end };
        string trainPath = EmbeddedDefault.WriteTrainingJsonl(Path.Combine(_temp, "data", "train.jsonl"));
        string validationPath = EmbeddedDefault.WriteValidationJsonl(Path.Combine(_temp, "data", "val.jsonl"));
        Assert.That(File.ReadLines(trainPath).First(), Does.StartWith("{\"text\":\"Genesis 1\\nIn the beginning God created"));

        foreach (var (path, paragraphs) in new[] { (trainPath, EmbeddedDefault.TrainingParagraphs), (validationPath, EmbeddedDefault.ValidationParagraphs) })
        {
            var data = JsonlDataset.Load(path, tokenizer.Encode, options);
            Assert.That(data.Format, Is.EqualTo(JsonlFormat.Text));
            Assert.That(data.Examples, Has.Count.EqualTo(paragraphs.Count));
            for (int i = 0; i < paragraphs.Count; i++)
            {
                var example = data.Examples[i];
                Assert.That(example.InputIds[^1], Is.EqualTo(end));
                Assert.That(tokenizer.Decode(example.InputIds[..^1]), Is.EqualTo(paragraphs[i]), $"{path} line {i + 1}");
            }
        }
    }

    [Test]
    public void AFewAdamWStepsLowerTheLossOnTheText()
    {
        // The full minute-long curve is bench/Phi2Native.Bench -- embedded; this checks the pieces fit together.
        var tokenizer = EmbeddedDefault.Tokenizer();
        int[] ids = tokenizer.Encode(EmbeddedDefault.TrainingParagraphs[0])[..32];
        // Explicitly the untrained model: the check starts from near-uniform predictions.
        using var model = EmbeddedDefault.CreateRandomModel(CpuBackend.Default);
        model.SetRequiresGrad(true);
        model.Training = true;
        using var optimizer = new AdamW(model.Parameters(), new AdamWOptions { LearningRate = EmbeddedDefault.RecommendedTraining.LearningRate });
        var losses = new List<double>();
        for (int step = 0; step < 4; step++)
        {
            using var scope = TensorScope.Begin();
            using var tape = GradientTape.Begin();
            var loss = model.CausalLanguageModelLoss(model.Forward(model.CreateInputIds(ids)), ids);
            losses.Add(loss.Item());
            tape.Backward(loss);
            optimizer.Step();
            optimizer.ZeroGrad();
        }
        Assert.That(losses[0], Is.EqualTo(Math.Log(EmbeddedDefault.Config.VocabSize)).Within(0.3), "random weights predict near-uniformly");
        Assert.That(losses[^1], Is.LessThan(losses[0] - 1), string.Join(", ", losses.Select(l => l.ToString("F3"))));
    }

    [Test]
    public void DescriptionSaysItIsNotPhi2AndHowToUseTheRealOne()
    {
        string description = EmbeddedDefault.Description;
        Assert.That(description, Does.Contain("tiny stand-in, not Phi-2"));
        Assert.That(description, Does.Contain("pretrained on Genesis"));
        Assert.That(description, Does.Contain("--model"));
        Assert.That(description, Does.Contain($"V={EmbeddedDefault.Config.VocabSize}"));
        Assert.That(EmbeddedDefault.TextSource, Does.Contain("King James").And.Contain("public domain"));
    }
}
