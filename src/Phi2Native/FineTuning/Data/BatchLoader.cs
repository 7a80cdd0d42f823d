namespace Phi2Native.FineTuning.Data;

/// <summary>One batch for a training or evaluation step.</summary>
/// <param name="InputIds">[B, T] token ids, row-major.</param>
/// <param name="Labels">
/// [B, T] row-major, unshifted, -100 where no loss is wanted; pass as they are to
/// <c>Phi2Model.CausalLanguageModelLoss</c>, which scores position t against label t + 1.
/// </param>
/// <param name="BatchSize">B, the rows in this batch (fewer than the configured size for a kept partial last batch).</param>
/// <param name="Time">T, the tokens per row.</param>
public sealed record TrainingBatch(int[] InputIds, int[] Labels, int BatchSize, int Time);

/// <summary>How a dataset is cut into rows and grouped into batches.</summary>
public sealed record BatchingOptions
{
    /// <summary>B, rows per batch.</summary>
    public required int BatchSize { get; init; }

    /// <summary>T, tokens per row (the max length).</summary>
    public required int MaxLength { get; init; }

    /// <summary>Packing (the default) or padding.</summary>
    public BatchingMode Mode { get; init; } = BatchingMode.Packing;

    /// <summary>Id at padded positions (labels there are -100); see <see cref="TrainingRows.Create(IReadOnlyList{TokenizedExample}, int, BatchingMode, int, string)"/>.</summary>
    public int PadId { get; init; }

    /// <summary>Whether rows are shuffled each epoch (true) or kept in file order (false, e.g. for validation).</summary>
    public bool Shuffle { get; init; } = true;

    /// <summary>The shuffling seed.</summary>
    public ulong Seed { get; init; }

    /// <summary>Drop an epoch's last batch when it has fewer than B rows (keep it by default).</summary>
    public bool DropLastPartialBatch { get; init; }
}

/// <summary>
/// Batches of a dataset's rows in the order of a <see cref="DataOrder"/>. The loader owns no position of its
/// own: save <see cref="Order"/>'s state with a checkpoint and restore it to resume exactly.
/// </summary>
/// <example>
/// <code>
/// var data = JsonlDataset.Load("train.jsonl", tokenizer.Encode, new JsonlOptions { EndOfTextId = 50256 });
/// var loader = BatchLoader.Create(data, new BatchingOptions { BatchSize = 8, MaxLength = 512, Seed = 42 });
/// foreach (var batch in loader.Batches(epochs: 3)) { /* step; checkpoints save loader.Order.Save() */ }
/// </code>
/// </example>
public sealed class BatchLoader
{
    /// <summary>Groups <paramref name="rows"/> into batches in the order of <paramref name="order"/>.</summary>
    /// <exception cref="ArgumentException">The order is for a different number of rows.</exception>
    public BatchLoader(TrainingRows rows, DataOrder order)
    {
        ArgumentNullException.ThrowIfNull(rows);
        ArgumentNullException.ThrowIfNull(order);
        if (order.RowCount != rows.Count)
            throw new ArgumentException($"the order covers {order.RowCount} rows, the data has {rows.Count}", nameof(order));
        (Rows, Order) = (rows, order);
    }

    /// <summary>Cuts <paramref name="dataset"/> into rows and orders them as <paramref name="options"/> say.</summary>
    /// <exception cref="DataFormatException">No row has a label the loss scores.</exception>
    /// <exception cref="Phi2Exception">Dropping the partial batch leaves no batch.</exception>
    public static BatchLoader Create(JsonlDataset dataset, BatchingOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var rows = TrainingRows.Create(dataset, options.MaxLength, options.Mode, options.PadId);
        return new BatchLoader(rows, new DataOrder(rows.Count, options.BatchSize, options.Seed, options.Shuffle, options.DropLastPartialBatch));
    }

    /// <summary>The rows batched.</summary>
    public TrainingRows Rows { get; }

    /// <summary>The order and its cursor.</summary>
    public DataOrder Order { get; }

    /// <summary>Batches in every epoch.</summary>
    public int BatchesPerEpoch => Order.BatchesPerEpoch;

    /// <summary>The batch at the cursor; the cursor moves past it.</summary>
    public TrainingBatch Next()
    {
        var rowIndices = Order.Next();
        int time = Rows.Time, batch = rowIndices.Length;
        var ids = new int[batch * time];
        var labels = new int[batch * time];
        for (int b = 0; b < batch; b++)
            Rows.CopyRow(rowIndices[b], ids.AsSpan(b * time, time), labels.AsSpan(b * time, time));
        return new TrainingBatch(ids, labels, batch, time);
    }

    /// <summary>
    /// The batches from the cursor up to the end of epoch <paramref name="epochs"/> - 1, so a fresh loader
    /// yields <paramref name="epochs"/> whole epochs and a restored one the rest of them.
    /// </summary>
    /// <remarks>
    /// The cursor has moved past a batch by the time it is yielded: state saved while handling a batch resumes
    /// at the one after it.
    /// </remarks>
    public IEnumerable<TrainingBatch> Batches(int epochs)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(epochs);
        return Iterate();

        IEnumerable<TrainingBatch> Iterate()
        {
            while (Order.Epoch < epochs) yield return Next();
        }
    }

    /// <summary>The batches from the cursor to the end of the current epoch.</summary>
    public IEnumerable<TrainingBatch> RestOfEpoch() => Batches(Order.Epoch + 1);
}
