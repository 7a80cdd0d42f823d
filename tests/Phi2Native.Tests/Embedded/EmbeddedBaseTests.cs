using NUnit.Framework;
using Phi2Native.Backends.Cpu;
using Phi2Native.Embedded;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Embedded;

/// <summary>
/// The pretrained base the embedded default ships: the shipped bytes are the recorded ones, the default model is that
/// base, and it has learnt Genesis and not Exodus.
/// </summary>
[TestFixture]
public class EmbeddedBaseTests : TemporaryDirectoryTest
{
    [Test]
    public void TheShippedWeightsHaveTheRecordedHash()
    {
        Assert.That(EmbeddedBase.ResourceSha256(), Is.EqualTo(EmbeddedBase.ShippedSha256));
        string file = Path.Combine(Fixtures.RepositoryRoot, "src", "Phi2Native", "Embedded", "base.safetensors");
        Assert.That(EmbeddedBase.Sha256(file), Is.EqualTo(EmbeddedBase.ShippedSha256), "the file in the repository is the one embedded");
        Assert.That(new FileInfo(file).Length, Is.InRange(1_000_000, 8_000_000), "a few MB");
    }

    [Test]
    public void TheDefaultModelHasLearntGenesisAndNotExodus()
    {
        var tokenizer = EmbeddedDefault.Tokenizer();
        using var model = EmbeddedDefault.CreateModel(CpuBackend.Default);
        double genesis = EmbeddedEvaluation.MeanLoss(model, EmbeddedBook.Genesis.PackedRows(tokenizer, 128).Validation, 8);
        double exodus = EmbeddedEvaluation.MeanLoss(model, EmbeddedBook.Exodus.PackedRows(tokenizer, 128).Validation, 8);
        double uniform = Math.Log(EmbeddedDefault.Config.VocabSize);
        Assert.That(genesis, Is.InRange(0.0, uniform / 2), "held-out Genesis: far below the untrained model's ln V");
        Assert.That(exodus, Is.InRange(genesis * 1.1, uniform), "Exodus was never trained on");
    }

    [Test]
    public void TheBooksSplitAsTheWholeTextDoes()
    {
        var genesis = EmbeddedBook.Genesis;
        var exodus = EmbeddedBook.Exodus;
        Assert.That(genesis.ValidationParagraphs.Select(Heading), Is.EqualTo(new[] { "Genesis 20", "Genesis 40" }));
        Assert.That(exodus.ValidationParagraphs.Select(Heading), Is.EqualTo(new[] { "Exodus 10", "Exodus 30" }));
        Assert.That(genesis.TrainingParagraphs, Has.Count.EqualTo(48).And.All.StartsWith("Genesis "));
        Assert.That(exodus.TrainingParagraphs, Has.Count.EqualTo(38).And.All.StartsWith("Exodus "));
        Assert.That(genesis.TrainingParagraphs.Concat(exodus.TrainingParagraphs), Is.EqualTo(EmbeddedDefault.TrainingParagraphs));
        Assert.That(genesis.ValidationParagraphs.Concat(exodus.ValidationParagraphs), Is.EqualTo(EmbeddedDefault.ValidationParagraphs));
    }

    private static string Heading(string paragraph) => paragraph.Split('\n')[0];
}
