using NUnit.Framework;
using Phi2Native.Backends.Cpu;
using Phi2Native.FineTuning;
using Phi2Native.FineTuning.Data;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;

namespace Phi2Native.Tests.FineTuning;

/// <summary>Batches meet the model: their [B, T] ids and labels feed CausalLanguageModelLoss as they are.</summary>
[TestFixture]
public sealed class TrainingBatchLossTests : DataTestBase
{
    [Test]
    public void RightPaddingDoesNotChangeTheLoss()
    {
        // "Q:" -> " ab" + eot: ids 81 58 32 97 98 7, labels X X 32 97 98 7. Padded to T = 10 with pad 3, the
        // loss must equal that of the 6 tokens alone: causal attention keeps the pads out of every real
        // position, and their -100 labels keep them out of the mean.
        string path = WriteLines("qa.jsonl", """{"prompt": "Q:", "completion": " ab"}""");
        var data = JsonlDataset.Load(path, Encode, new JsonlOptions { EndOfTextId = 7 });
        var loader = BatchLoader.Create(data, new BatchingOptions { BatchSize = 1, MaxLength = 10, Mode = BatchingMode.Padding, PadId = 3 });
        var batch = loader.Next();
        Assert.That(batch.InputIds, Is.EqualTo(new[] { 81, 58, 32, 97, 98, 7, 3, 3, 3, 3 }));

        using var model = Phi2Model.CreateRandom(Phi2Config.Tiny, new CpuBackend(poisonNewMemory: true), seed: 3);
        using var scope = TensorScope.Begin();
        double padded = model.CausalLanguageModelLoss(model.Forward(model.CreateInputIds(batch.InputIds, batch.BatchSize)), batch.Labels).Item();
        var example = data.Examples[0];
        double alone = model.CausalLanguageModelLoss(model.Forward(model.CreateInputIds(example.InputIds)), example.Labels).Item();

        Assert.That(padded, Is.EqualTo(alone).Within(1e-4).Percent);
        Assert.That(padded, Is.GreaterThan(0));
    }

    [Test]
    public void PackedPartialBatchFeedsTheLoss()
    {
        string path = WriteLines("text.jsonl", """{"text": "abcabc"}""", """{"text": "cab"}""", """{"text": "bb"}""");
        var data = JsonlDataset.Load(path, Encode, new JsonlOptions { EndOfTextId = 7 });
        // 14 tokens packed into rows of 4: 3 full rows and a tail [b 7 P P]; batches of 3 -> 3 rows, then 1.
        var loader = BatchLoader.Create(data, new BatchingOptions { BatchSize = 3, MaxLength = 4, Seed = 9 });
        Assert.That(loader.Rows.Count, Is.EqualTo(4));

        using var model = Phi2Model.CreateRandom(Phi2Config.Tiny, new CpuBackend(poisonNewMemory: true), seed: 3);
        using var scope = TensorScope.Begin();
        foreach (var batch in loader.Batches(epochs: 1))
        {
            double loss = model.CausalLanguageModelLoss(model.Forward(model.CreateInputIds(batch.InputIds, batch.BatchSize)), batch.Labels).Item();
            Assert.That(double.IsFinite(loss) && loss > 0, $"batch of {batch.BatchSize}: loss {loss}");
        }
    }
}
