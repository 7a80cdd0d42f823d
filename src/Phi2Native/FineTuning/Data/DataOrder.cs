using Phi2Native.Determinism;

namespace Phi2Native.FineTuning.Data;

/// <summary>
/// The saved position of a <see cref="DataOrder"/>: the cursor (epoch, next batch within it) and the settings
/// that fix the order, so a restore can refuse data or settings that would yield different batches.
/// Serializes with System.Text.Json as it stands.
/// </summary>
/// <param name="Epoch">0-based epoch of the next batch.</param>
/// <param name="BatchInEpoch">0-based index, within <paramref name="Epoch"/>, of the next batch.</param>
/// <param name="Seed">The shuffling seed.</param>
/// <param name="Shuffle">Whether rows are shuffled (false: file order every epoch).</param>
/// <param name="RowCount">N, the rows ordered.</param>
/// <param name="BatchSize">B, rows per batch.</param>
/// <param name="DropLastPartialBatch">Whether an epoch's last batch of fewer than B rows is dropped.</param>
public sealed record DataOrderState(int Epoch, int BatchInEpoch, ulong Seed, bool Shuffle, int RowCount, int BatchSize, bool DropLastPartialBatch);

/// <summary>
/// Which rows form which batch, epoch after epoch, and a cursor over them. Epoch e visits the N rows in a
/// permutation derived from the seed and e alone (a Fisher-Yates shuffle driven by SplitMix64), so the order
/// is the same bit for bit on every machine and .NET version, and a run resumed from <see cref="Save"/> sees
/// exactly the batches an uninterrupted run would.
/// </summary>
/// <remarks>
/// Batch k of an epoch is rows perm[k*B .. k*B+B) of that epoch's permutation; when B does not divide N the
/// last batch holds N mod B rows, or is dropped with <c>dropLastPartialBatch</c>. Rows left out of one epoch's
/// dropped batch come back in other epochs, as the permutation changes.
/// </remarks>
public sealed class DataOrder
{
    private int[]? _permutation;
    private int _permutationEpoch = -1;

    /// <summary>Creates the order, its cursor at the start of epoch 0.</summary>
    /// <param name="rowCount">N, the rows to order (at least 1).</param>
    /// <param name="batchSize">B, rows per batch (at least 1).</param>
    /// <param name="seed">The shuffling seed.</param>
    /// <param name="shuffle">False keeps rows in order every epoch (a validation set).</param>
    /// <param name="dropLastPartialBatch">Drop an epoch's last batch when it has fewer than B rows.</param>
    /// <exception cref="ArgumentOutOfRangeException">N or B is below 1.</exception>
    /// <exception cref="Phi2Exception">Dropping the partial batch leaves no batch (N &lt; B).</exception>
    public DataOrder(int rowCount, int batchSize, ulong seed, bool shuffle = true, bool dropLastPartialBatch = false)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(rowCount, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        (RowCount, BatchSize, Seed, Shuffle, DropLastPartialBatch) = (rowCount, batchSize, seed, shuffle, dropLastPartialBatch);
        BatchesPerEpoch = dropLastPartialBatch ? rowCount / batchSize : (rowCount + batchSize - 1) / batchSize;
        if (BatchesPerEpoch == 0)
            throw new Phi2Exception($"{rowCount} rows fill no batch of {batchSize} when the last partial batch is dropped; lower the batch size or keep partial batches");
    }

    /// <summary>N, the rows ordered.</summary>
    public int RowCount { get; }

    /// <summary>B, rows per (full) batch.</summary>
    public int BatchSize { get; }

    /// <summary>The shuffling seed.</summary>
    public ulong Seed { get; }

    /// <summary>Whether rows are shuffled.</summary>
    public bool Shuffle { get; }

    /// <summary>Whether an epoch's last batch of fewer than B rows is dropped.</summary>
    public bool DropLastPartialBatch { get; }

    /// <summary>Batches in every epoch: ceil(N / B), or floor(N / B) when the partial batch is dropped.</summary>
    public int BatchesPerEpoch { get; }

    /// <summary>0-based epoch of the next batch.</summary>
    public int Epoch { get; private set; }

    /// <summary>0-based index within <see cref="Epoch"/> of the next batch; always below <see cref="BatchesPerEpoch"/>.</summary>
    public int BatchInEpoch { get; private set; }

    /// <summary>Batches taken since epoch 0 began: Epoch * BatchesPerEpoch + BatchInEpoch.</summary>
    public long BatchesTaken => (long)Epoch * BatchesPerEpoch + BatchInEpoch;

    /// <summary>The order in which epoch <paramref name="epoch"/> visits the rows: a permutation of 0..N-1 (a fresh array).</summary>
    public int[] Permutation(int epoch)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(epoch);
        var order = new int[RowCount];
        for (int i = 0; i < order.Length; i++) order[i] = i;
        if (!Shuffle) return order;

        // Fisher-Yates from the end; the generator is seeded by mixing the seed with the epoch, so any epoch's
        // order is computed directly, without replaying the epochs before it.
        ulong state = Seeds.Derive(Seed, SeedPurpose.EpochShuffle, epoch);
        for (int i = order.Length - 1; i > 0; i--)
        {
            int j = (int)NextBelow(ref state, (ulong)i + 1);
            (order[i], order[j]) = (order[j], order[i]);
        }
        return order;
    }

    /// <summary>
    /// The rows of the batch at the cursor (B of them, or fewer for a kept partial last batch), and moves the
    /// cursor past it, into the next epoch after the last batch of one.
    /// </summary>
    public ReadOnlySpan<int> Next()
    {
        if (_permutationEpoch != Epoch) (_permutation, _permutationEpoch) = (Permutation(Epoch), Epoch);
        int start = BatchInEpoch * BatchSize;
        var rows = _permutation.AsSpan(start, Math.Min(BatchSize, RowCount - start));
        if (++BatchInEpoch == BatchesPerEpoch) (Epoch, BatchInEpoch) = (Epoch + 1, 0);
        return rows;
    }

    /// <summary>The cursor and settings, to be written with a checkpoint.</summary>
    public DataOrderState Save() => new(Epoch, BatchInEpoch, Seed, Shuffle, RowCount, BatchSize, DropLastPartialBatch);

    /// <summary>Moves the cursor to a saved position, after checking that the state was saved from an order like this one.</summary>
    /// <exception cref="Phi2Exception">
    /// The state's seed, shuffling, row count, batch size or partial-batch setting differs from this order's
    /// (the data or the settings changed since it was saved), or its cursor lies outside the epoch.
    /// </exception>
    public void Restore(DataOrderState state)
    {
        ArgumentNullException.ThrowIfNull(state);
        var differences = new List<string>();
        void Compare<T>(string name, T saved, T current)
        {
            if (!EqualityComparer<T>.Default.Equals(saved, current)) differences.Add($"{name} {saved} (saved) vs {current} (now)");
        }
        Compare("seed", state.Seed, Seed);
        Compare("shuffle", state.Shuffle, Shuffle);
        Compare("rows", state.RowCount, RowCount);
        Compare("batch size", state.BatchSize, BatchSize);
        Compare("drop last partial batch", state.DropLastPartialBatch, DropLastPartialBatch);
        if (differences.Count > 0)
            throw new Phi2Exception($"the saved data order does not fit this data: {string.Join(", ", differences)}; resuming would see different batches");
        if (state.Epoch < 0 || state.BatchInEpoch < 0 || state.BatchInEpoch >= BatchesPerEpoch)
            throw new Phi2Exception($"the saved data order's cursor (epoch {state.Epoch}, batch {state.BatchInEpoch}) lies outside an epoch of {BatchesPerEpoch} batches");
        (Epoch, BatchInEpoch) = (state.Epoch, state.BatchInEpoch);
    }

    /// <summary>SplitMix64: the next 64 random bits.</summary>
    private static ulong NextBits(ref ulong state)
    {
        ulong z = state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>A uniform integer in [0, bound) without modulo bias: the lowest 2^64 mod bound draws are rejected, so the rest hold every residue equally often.</summary>
    private static ulong NextBelow(ref ulong state, ulong bound)
    {
        // 2^64 mod bound, computed without 2^64: (2^64 - bound) mod bound.
        ulong rejectBelow = (0 - bound) % bound;
        while (true)
        {
            ulong bits = NextBits(ref state);
            if (bits >= rejectBelow) return bits % bound;
        }
    }
}
