namespace Phi2Native.FineTuning.Data;

/// <summary>How examples become rows of exactly T tokens.</summary>
public enum BatchingMode
{
    /// <summary>
    /// Concatenate every example (ids and labels) and cut the stream into rows of T; an example may span two
    /// rows, its label mask travelling with it. No compute is spent on padding; only the tail row is padded.
    /// </summary>
    Packing,

    /// <summary>
    /// One example per row: truncated to T when longer, right-padded when shorter. Right padding is safe under
    /// causal attention: a pad only ever follows the real tokens, so none of them attends to it.
    /// </summary>
    Padding,
}

/// <summary>
/// The training rows of a dataset: <see cref="Count"/> rows of <see cref="Time"/> tokens, ids and labels
/// row-major [N, T], ready to be grouped into batches.
/// </summary>
/// <remarks>
/// Padded positions hold <see cref="PadId"/> with label -100. A row with no label the loss would score (none
/// at positions 1..T-1, since the loss shifts labels by one) is dropped and counted in
/// <see cref="RowsWithoutTargets"/>: it would cost a forward and backward and teach nothing.
/// </remarks>
public sealed class TrainingRows
{
    private readonly int[] _inputIds, _labels;

    private TrainingRows(BatchingMode mode, int time, int padId, List<int> ids, List<int> labels,
        int examples, int truncated, int rowsWithoutTargets)
    {
        Mode = mode;
        Time = time;
        PadId = padId;
        _inputIds = [.. ids];
        _labels = [.. labels];
        Examples = examples;
        TruncatedExamples = truncated;
        RowsWithoutTargets = rowsWithoutTargets;
    }

    /// <summary>Packing or padding.</summary>
    public BatchingMode Mode { get; }

    /// <summary>T, the tokens in every row.</summary>
    public int Time { get; }

    /// <summary>The id at padded positions.</summary>
    public int PadId { get; }

    /// <summary>N, the number of rows.</summary>
    public int Count => _inputIds.Length / Time;

    /// <summary>[N, T] token ids, row-major.</summary>
    public ReadOnlySpan<int> InputIds => _inputIds;

    /// <summary>[N, T] labels, row-major: ids, or -100 for a prompt's tokens and for padding.</summary>
    public ReadOnlySpan<int> Labels => _labels;

    /// <summary>How many examples the rows were made from.</summary>
    public int Examples { get; }

    /// <summary>Padding only: examples longer than T, whose tokens after the first T were cut off.</summary>
    public int TruncatedExamples { get; }

    /// <summary>Rows dropped because no label in them is scored by the loss.</summary>
    public int RowsWithoutTargets { get; }

    /// <summary>Positions the loss scores, over all rows: labels other than -100 at positions 1..T-1 of each row.</summary>
    public long TargetCount
    {
        get
        {
            long count = 0;
            for (int row = 0; row < Count; row++) count += Targets(_labels.AsSpan(row * Time, Time));
            return count;
        }
    }

    /// <summary>One line for a log: examples, rows, mode, truncations and dropped rows.</summary>
    public string Summary =>
        $"{Examples} examples -> {Count} rows of {Time} tokens ({(Mode == BatchingMode.Packing ? "packed" : "padded")})" +
        (TruncatedExamples > 0 ? $", {TruncatedExamples} truncated to {Time} tokens" : "") +
        (RowsWithoutTargets > 0 ? $", {RowsWithoutTargets} rows without a scored label dropped" : "");

    /// <summary>Copies row <paramref name="row"/>'s ids and labels into <paramref name="ids"/> and <paramref name="labels"/> (each of length T).</summary>
    public void CopyRow(int row, Span<int> ids, Span<int> labels)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(row);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(row, Count);
        _inputIds.AsSpan(row * Time, Time).CopyTo(ids);
        _labels.AsSpan(row * Time, Time).CopyTo(labels);
    }

    /// <summary>Makes rows from a loaded dataset; an error names its file.</summary>
    /// <exception cref="DataFormatException">No row has a label the loss would score.</exception>
    public static TrainingRows Create(JsonlDataset dataset, int time, BatchingMode mode, int padId = 0)
    {
        ArgumentNullException.ThrowIfNull(dataset);
        return Create(dataset.Examples, time, mode, padId, dataset.Source);
    }

    /// <summary>Makes rows of <paramref name="time"/> tokens from <paramref name="examples"/>, in their order.</summary>
    /// <param name="examples">Tokenized examples.</param>
    /// <param name="time">T, at least 2 (one position predicts the next).</param>
    /// <param name="mode">Packing or padding.</param>
    /// <param name="padId">
    /// Id at padded positions. Any id in the vocabulary works: labels there are -100 and, being at the right,
    /// no real token attends to them. Phi-2 runs commonly pass the end-of-text id 50256.
    /// </param>
    /// <param name="source">Names the data in errors.</param>
    /// <exception cref="DataFormatException">No row has a label the loss would score.</exception>
    public static TrainingRows Create(IReadOnlyList<TokenizedExample> examples, int time, BatchingMode mode, int padId = 0, string source = "dataset")
    {
        ArgumentNullException.ThrowIfNull(examples);
        ArgumentOutOfRangeException.ThrowIfLessThan(time, 2);
        ArgumentOutOfRangeException.ThrowIfNegative(padId);
        foreach (var example in examples)
            if (example.InputIds.Length != example.Labels.Length)
                throw new ArgumentException($"an example (line {example.LineNumber}) has {example.InputIds.Length} ids but {example.Labels.Length} labels", nameof(examples));

        var builder = new Builder(time, padId);
        int truncated = 0;
        if (mode == BatchingMode.Packing)
        {
            // One stream of tokens; a row is emitted each time T have gathered, so an example (and its mask)
            // continues at position 0 of the next row. The tail row, shorter than T, is padded.
            foreach (var example in examples) builder.Append(example.InputIds, example.Labels);
            builder.PadRow();
        }
        else
        {
            foreach (var example in examples)
            {
                int kept = Math.Min(example.Length, time);
                if (kept < example.Length) truncated++;
                builder.Append(example.InputIds.AsSpan(0, kept), example.Labels.AsSpan(0, kept));
                builder.PadRow();
            }
        }

        if (builder.Rows == 0)
            throw new DataFormatException(source, null,
                $"no row of {time} tokens has a label the loss scores ({examples.Count} examples, {builder.RowsWithoutTargets} rows dropped); " +
                "every position is masked: prompts without completions, or completions cut off by the max length");
        return new TrainingRows(mode, time, padId, builder.Ids, builder.Labels, examples.Count, truncated, builder.RowsWithoutTargets);
    }

    /// <summary>Labels the loss scores in one row [T]: not -100, and not at position 0 (nothing predicts it).</summary>
    private static int Targets(ReadOnlySpan<int> rowLabels)
    {
        int count = 0;
        for (int t = 1; t < rowLabels.Length; t++)
            if (rowLabels[t] != TokenizedExample.IgnoreLabel) count++;
        return count;
    }

    /// <summary>Gathers tokens into the current row and emits it when full (or when padded).</summary>
    private sealed class Builder(int time, int padId)
    {
        private readonly int[] _rowIds = new int[time], _rowLabels = new int[time];
        private int _filled;

        public List<int> Ids { get; } = [];
        public List<int> Labels { get; } = [];
        public int Rows => Ids.Count / time;
        public int RowsWithoutTargets { get; private set; }

        public void Append(ReadOnlySpan<int> ids, ReadOnlySpan<int> labels)
        {
            while (ids.Length > 0)
            {
                int take = Math.Min(time - _filled, ids.Length);
                ids[..take].CopyTo(_rowIds.AsSpan(_filled));
                labels[..take].CopyTo(_rowLabels.AsSpan(_filled));
                _filled += take;
                ids = ids[take..];
                labels = labels[take..];
                if (_filled == time) Emit();
            }
        }

        /// <summary>Pads a partly filled row to T and emits it; does nothing on an empty row.</summary>
        public void PadRow()
        {
            if (_filled == 0) return;
            _rowIds.AsSpan(_filled).Fill(padId);
            _rowLabels.AsSpan(_filled).Fill(TokenizedExample.IgnoreLabel);
            _filled = time;
            Emit();
        }

        private void Emit()
        {
            if (Targets(_rowLabels) == 0) RowsWithoutTargets++;
            else
            {
                Ids.AddRange(_rowIds);
                Labels.AddRange(_rowLabels);
            }
            _filled = 0;
        }
    }
}
