using System.Text.Json;
using NUnit.Framework;
using Phi2Native.FineTuning;
using Phi2Native.FineTuning.Data;

namespace Phi2Native.Tests.FineTuning;

/// <summary>Batches from rows: contents, partial batches, epochs, and a resumed run equal to an uninterrupted one.</summary>
[TestFixture]
public sealed class BatchLoaderTests : DataTestBase
{
    /// <summary>Ten one-row examples: row r is [10r+1, 10r+2, 10r+3] with labels equal, so a batch shows which rows it holds.</summary>
    private static TrainingRows TenRows() =>
        TrainingRows.Create(Enumerable.Range(0, 10).Select(r => Example(0, 10 * r + 1, 10 * r + 2, 10 * r + 3)).ToArray(),
            time: 3, BatchingMode.Padding);

    [Test]
    public void BatchHoldsTheOrderedRowsRowMajor()
    {
        var loader = new BatchLoader(TenRows(), new DataOrder(10, 4, seed: 3));
        int[] permutation = loader.Order.Permutation(0);

        var batch = loader.Next();
        Assert.That((batch.BatchSize, batch.Time), Is.EqualTo((4, 3)));
        int[] expected = permutation[0..4].SelectMany(r => new[] { 10 * r + 1, 10 * r + 2, 10 * r + 3 }).ToArray();
        Assert.That(batch.InputIds, Is.EqualTo(expected));
        Assert.That(batch.Labels, Is.EqualTo(expected));
    }

    [Test]
    public void EpochsCoverEveryRowOnceWithAPartialLastBatch()
    {
        var loader = new BatchLoader(TenRows(), new DataOrder(10, 4, seed: 3));
        Assert.That(loader.BatchesPerEpoch, Is.EqualTo(3));

        var batches = loader.Batches(epochs: 2).ToList();
        Assert.That(batches.Select(b => b.BatchSize), Is.EqualTo(new[] { 4, 4, 2, 4, 4, 2 }));
        Assert.That(batches[2].InputIds, Has.Length.EqualTo(2 * 3));
        for (int epoch = 0; epoch < 2; epoch++)
        {
            var firstTokens = batches.Skip(3 * epoch).Take(3).SelectMany(b => b.InputIds.Where((_, i) => i % 3 == 0));
            Assert.That(firstTokens.Order(), Is.EqualTo(Enumerable.Range(0, 10).Select(r => 10 * r + 1)), $"epoch {epoch}");
        }
        Assert.That(loader.Batches(epochs: 2), Is.Empty, "the cursor is at the end of epoch 1");
    }

    [Test]
    public void DroppedPartialBatch()
    {
        var loader = new BatchLoader(TenRows(), new DataOrder(10, 4, seed: 3, dropLastPartialBatch: true));
        Assert.That(loader.Batches(epochs: 2).Select(b => b.BatchSize), Is.EqualTo(new[] { 4, 4, 4, 4 }));
    }

    [Test]
    public void RestOfEpochStopsAtTheEpochsEnd()
    {
        var loader = new BatchLoader(TenRows(), new DataOrder(10, 4, seed: 3));
        loader.Next();
        Assert.That(loader.RestOfEpoch().Count(), Is.EqualTo(2));
        Assert.That(loader.Order.Epoch, Is.EqualTo(1));
        Assert.That(loader.RestOfEpoch().Count(), Is.EqualTo(3));
    }

    [TestCase(0)]
    [TestCase(1)]
    [TestCase(2)]
    [TestCase(3)]
    [TestCase(5)]
    [TestCase(8)]
    public void ResumedRunSeesTheBatchesOfAnUninterruptedOne(int stopAfter)
    {
        const int epochs = 3;
        var uninterrupted = new BatchLoader(TenRows(), new DataOrder(10, 4, seed: 11)).Batches(epochs).ToList();

        // First run: stop after some batches, saving the state (as JSON, as a checkpoint would) while handling the last.
        var first = new BatchLoader(TenRows(), new DataOrder(10, 4, seed: 11));
        var seen = new List<TrainingBatch>();
        string saved = JsonSerializer.Serialize(first.Order.Save());
        foreach (var batch in stopAfter == 0 ? [] : first.Batches(epochs))
        {
            seen.Add(batch);
            if (seen.Count == stopAfter)
            {
                saved = JsonSerializer.Serialize(first.Order.Save());
                break;
            }
        }

        // Second run: a fresh loader over the same data, restored.
        var second = new BatchLoader(TenRows(), new DataOrder(10, 4, seed: 11));
        second.Order.Restore(JsonSerializer.Deserialize<DataOrderState>(saved)!);
        seen.AddRange(second.Batches(epochs));

        Assert.That(seen, Has.Count.EqualTo(uninterrupted.Count));
        for (int i = 0; i < seen.Count; i++)
        {
            Assert.That(seen[i].InputIds, Is.EqualTo(uninterrupted[i].InputIds), $"batch {i} ids");
            Assert.That(seen[i].Labels, Is.EqualTo(uninterrupted[i].Labels), $"batch {i} labels");
            Assert.That(seen[i].BatchSize, Is.EqualTo(uninterrupted[i].BatchSize), $"batch {i} size");
        }
    }

    [Test]
    public void CreateFromAFileEndToEnd()
    {
        // "ab" -> "c" + eot, "Q" -> " A" + eot, packed into rows of 4 in file order.
        string path = WriteLines("train.jsonl", """{"prompt": "ab", "completion": "c"}""", """{"prompt": "Q", "completion": " A"}""");
        var data = JsonlDataset.Load(path, Encode, new JsonlOptions { EndOfTextId = 7 });
        var loader = BatchLoader.Create(data, new BatchingOptions { BatchSize = 2, MaxLength = 4, Shuffle = false, PadId = 0 });

        // Stream ids 97 98 99 7 81 32 65 7, labels X X 99 7 X 32 65 7: two rows, one batch.
        var batch = loader.Batches(epochs: 1).Single();
        Assert.That(batch.InputIds, Is.EqualTo(new[] { 97, 98, 99, 7, 81, 32, 65, 7 }));
        Assert.That(batch.Labels, Is.EqualTo(new[] { X, X, 99, 7, X, 32, 65, 7 }));
        Assert.That((batch.BatchSize, batch.Time), Is.EqualTo((2, 4)));
    }

    [Test]
    public void OrderForOtherRowsIsRefused()
    {
        Assert.Throws<ArgumentException>(() => new BatchLoader(TenRows(), new DataOrder(9, 4, seed: 1)));
    }
}
