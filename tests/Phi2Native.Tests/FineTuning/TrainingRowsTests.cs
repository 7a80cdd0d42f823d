using NUnit.Framework;
using Phi2Native.FineTuning;
using Phi2Native.FineTuning.Data;

namespace Phi2Native.Tests.FineTuning;

/// <summary>Packing and padding into rows of T, every row worked out by hand; X is the ignored label -100.</summary>
[TestFixture]
public sealed class TrainingRowsTests : DataTestBase
{
    private const int Pad = 50;

    // Text [1 2 3]; prompt [4 5] + completion [6 7 8]; text [9 10].
    private static readonly TokenizedExample[] s_examples =
    [
        Example(0, 1, 2, 3),
        Example(2, 4, 5, 6, 7, 8),
        Example(0, 9, 10),
    ];

    [Test]
    public void PackingCutsTheStreamIntoRowsAndKeepsMasksAcrossTheCut()
    {
        var rows = TrainingRows.Create(s_examples, time: 4, BatchingMode.Packing, Pad);

        // Stream ids 1..10, labels 1 2 3 X X 6 7 8 9 10: the prompt 4 5 straddles rows 0 and 1, masked on both sides.
        Assert.That(rows.Count, Is.EqualTo(3));
        Assert.That(rows.InputIds.ToArray(), Is.EqualTo(new[] { 1, 2, 3, 4, /**/ 5, 6, 7, 8, /**/ 9, 10, Pad, Pad }));
        Assert.That(rows.Labels.ToArray(), Is.EqualTo(new[] { 1, 2, 3, X, /**/ X, 6, 7, 8, /**/ 9, 10, X, X }));
        Assert.That(rows.TruncatedExamples, Is.Zero);
        Assert.That(rows.RowsWithoutTargets, Is.Zero);
        // Scored: positions 1..3 of each row with a label: 2 3 | 6 7 8 | 10.
        Assert.That(rows.TargetCount, Is.EqualTo(6));
        Assert.That(rows.Summary, Is.EqualTo("3 examples -> 3 rows of 4 tokens (packed)"));
    }

    [Test]
    public void PackingExactMultipleHasNoPaddedRow()
    {
        var rows = TrainingRows.Create([Example(0, 1, 2, 3), Example(0, 4, 5, 6)], time: 3, BatchingMode.Packing, Pad);

        Assert.That(rows.InputIds.ToArray(), Is.EqualTo(new[] { 1, 2, 3, 4, 5, 6 }));
        Assert.That(rows.Labels.ToArray(), Is.EqualTo(new[] { 1, 2, 3, 4, 5, 6 }));
    }

    [Test]
    public void PackingDropsATailThatNothingIsScoredIn()
    {
        // Stream 1 2 3 4 5: row [1 2 3 4], then the tail [5 P P P] whose only label sits at position 0, which no
        // position predicts.
        var rows = TrainingRows.Create([Example(0, 1, 2, 3), Example(0, 4, 5)], time: 4, BatchingMode.Packing, Pad);

        Assert.That(rows.Count, Is.EqualTo(1));
        Assert.That(rows.InputIds.ToArray(), Is.EqualTo(new[] { 1, 2, 3, 4 }));
        Assert.That(rows.RowsWithoutTargets, Is.EqualTo(1));
    }

    [Test]
    public void PaddingPutsOneExamplePerRowTruncatesAndPadsRight()
    {
        var rows = TrainingRows.Create(s_examples, time: 4, BatchingMode.Padding, Pad);

        Assert.That(rows.Count, Is.EqualTo(3));
        Assert.That(rows.InputIds.ToArray(), Is.EqualTo(new[] { 1, 2, 3, Pad, /**/ 4, 5, 6, 7, /**/ 9, 10, Pad, Pad }));
        Assert.That(rows.Labels.ToArray(), Is.EqualTo(new[] { 1, 2, 3, X, /**/ X, X, 6, 7, /**/ 9, 10, X, X }));
        // The prompt/completion example had 5 tokens; its 8 is cut.
        Assert.That(rows.TruncatedExamples, Is.EqualTo(1));
        Assert.That(rows.Summary, Is.EqualTo("3 examples -> 3 rows of 4 tokens (padded), 1 truncated to 4 tokens"));
    }

    [Test]
    public void PaddingDropsRowsWithNothingScored()
    {
        TokenizedExample[] examples =
        [
            Example(0, 9),             // one token: position 0 only
            Example(4, 1, 2, 3, 4, 5), // the prompt fills T: the completion is cut off
            Example(1, 6, 7),          // kept: 7 is scored
        ];
        var rows = TrainingRows.Create(examples, time: 4, BatchingMode.Padding, Pad);

        Assert.That(rows.Count, Is.EqualTo(1));
        Assert.That(rows.InputIds.ToArray(), Is.EqualTo(new[] { 6, 7, Pad, Pad }));
        Assert.That(rows.Labels.ToArray(), Is.EqualTo(new[] { X, 7, X, X }));
        Assert.That(rows.TruncatedExamples, Is.EqualTo(1));
        Assert.That(rows.RowsWithoutTargets, Is.EqualTo(2));
    }

    [Test]
    public void NothingScoredAnywhereIsAnError()
    {
        var error = Assert.Throws<DataFormatException>(() =>
            TrainingRows.Create([Example(3, 1, 2, 3, 4)], time: 3, BatchingMode.Padding, Pad, source: "train.jsonl"))!;

        Assert.That(error.Message, Does.StartWith("train.jsonl: no row of 3 tokens has a label the loss scores"));
    }

    [Test]
    public void CreateFromAFileNamesItInErrors()
    {
        string path = WriteLines("qa.jsonl", """{"prompt": "abc", "completion": "d"}""");
        var data = Load(path);

        var error = Assert.Throws<DataFormatException>(() => TrainingRows.Create(data, time: 2, BatchingMode.Padding))!;
        Assert.That(error.FilePath, Is.EqualTo(path));
    }

    [Test]
    public void InvalidArguments()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => TrainingRows.Create(s_examples, time: 1, BatchingMode.Packing));
        Assert.Throws<ArgumentOutOfRangeException>(() => TrainingRows.Create(s_examples, time: 4, BatchingMode.Packing, padId: -1));
        Assert.Throws<ArgumentException>(() => TrainingRows.Create([new TokenizedExample([1, 2], [1])], time: 4, BatchingMode.Packing));
    }
}
