using Phi2Native.Tensors;

namespace Phi2Native.Backends.Cpu;

// The KV-cache ops (inference only): a cache is [B, Tmax, H, D]; row t of batch b starts at element (b*Tmax + t)*H*D.
public sealed partial class CpuBackend
{
    /// <inheritdoc/>
    public void CacheWrite(Tensor source, Tensor cache, int position)
    {
        var (batch, time, capacity) = RequireCacheFitsSource(source, cache, nameof(CacheWrite));
        if (position < 0 || position + time > capacity)
            throw new ArgumentOutOfRangeException(nameof(position), position, $"CacheWrite: rows [{position}, {position + time}) are outside the cache's {capacity}");
        // One contiguous block of T*H*D elements per batch row: source batch b -> cache rows [position, position + T) of b.
        int rowBytes = source.Size(2) * source.Size(3) * source.DType.SizeInBytes();
        Span<byte> from = Bytes(source), to = Bytes(cache);
        for (int b = 0; b < batch; b++)
            from.Slice(b * time * rowBytes, time * rowBytes).CopyTo(to.Slice((b * capacity + position) * rowBytes, time * rowBytes));
    }

    /// <inheritdoc/>
    public Tensor CachedAttention(Tensor q, Tensor keyCache, Tensor valueCache, int keyTime)
    {
        var (batch, queryTime, heads, headDim, capacity) = RequireCachesFitQuery(q, keyCache, valueCache);
        if (keyTime < queryTime || keyTime > capacity)
            throw new ArgumentOutOfRangeException(nameof(keyTime), keyTime, $"CachedAttention: keyTime must be in [Tq = {queryTime}, Tmax = {capacity}]");
        var output = Allocate(q.Shape, Compute(q).DType);
        // The log-sum-exp is only needed for backward, which a cache never runs: a scratch tensor, freed here.
        using var logSumExp = Allocate([batch, heads, queryTime], q.DType);
        TensorScope.Detach(logSumExp);
        if (q.DType == DType.F64)
            CpuAttention.ForwardCached(Span<double>(q), Span<double>(keyCache), Span<double>(valueCache), Span<double>(output), Span<double>(logSumExp),
                batch, queryTime, keyTime, capacity, heads, headDim);
        else
            CpuAttention.ForwardCached(Span<float>(q), Span<float>(keyCache), Span<float>(valueCache), Span<float>(output), Span<float>(logSumExp),
                batch, queryTime, keyTime, capacity, heads, headDim);
        return output;
    }

    // The per-row ops: batch row b is a contiguous [T, H, D] block of the input and a contiguous [Tmax, H, D]
    // block of the cache, so each row runs the plain op's kernel on its own slices with its own position. A row
    // therefore gets bit for bit what it gets alone, which batched generation relies on.

    /// <inheritdoc/>
    public Tensor RotaryPerRow(Tensor x, int rotaryDim, double theta, Tensor rowOffsets)
    {
        RequireRank(x, 4, "RotaryPerRow input [B, T, H, D]");
        int batch = x.Size(0), rowElements = x.Size(1) * x.Size(2) * x.Size(3);
        var offsets = RowValues(rowOffsets, batch, nameof(rowOffsets), "RotaryPerRow row offsets");
        for (int b = 0; b < batch; b++)
            if (offsets[b] < 0)
                throw new ArgumentOutOfRangeException(nameof(rowOffsets), offsets[b], $"RotaryPerRow: row {b}'s position offset must be >= 0");
        var y = Allocate(x.Shape, Compute(x).DType);
        for (int b = 0; b < batch; b++)
        {
            if (x.DType == DType.F64)
                CpuRotary.Forward<double>(Span<double>(x).Slice(b * rowElements, rowElements), Span<double>(y).Slice(b * rowElements, rowElements),
                    1, x.Size(1), x.Size(2), x.Size(3), rotaryDim, theta, offsets[b]);
            else
                CpuRotary.Forward<float>(Span<float>(x).Slice(b * rowElements, rowElements), Span<float>(y).Slice(b * rowElements, rowElements),
                    1, x.Size(1), x.Size(2), x.Size(3), rotaryDim, theta, offsets[b]);
        }
        return y;
    }

    /// <inheritdoc/>
    public void CacheWritePerRow(Tensor source, Tensor cache, Tensor rowPositions)
    {
        var (batch, time, capacity) = RequireCacheFitsSource(source, cache, nameof(CacheWritePerRow));
        var positions = RowValues(rowPositions, batch, nameof(rowPositions), "CacheWritePerRow row positions");
        for (int b = 0; b < batch; b++)
            if (positions[b] < 0 || positions[b] + time > capacity)
                throw new ArgumentOutOfRangeException(nameof(rowPositions), positions[b],
                    $"CacheWritePerRow: row {b}'s rows [{positions[b]}, {positions[b] + time}) are outside the cache's {capacity}");
        int rowBytes = source.Size(2) * source.Size(3) * source.DType.SizeInBytes();
        Span<byte> from = Bytes(source), to = Bytes(cache);
        for (int b = 0; b < batch; b++)
            from.Slice(b * time * rowBytes, time * rowBytes).CopyTo(to.Slice((b * capacity + positions[b]) * rowBytes, time * rowBytes));
    }

    /// <inheritdoc/>
    public Tensor CachedAttentionPerRow(Tensor q, Tensor keyCache, Tensor valueCache, Tensor rowKeyTimes)
    {
        var (batch, queryTime, heads, headDim, capacity) = RequireCachesFitQuery(q, keyCache, valueCache);
        var keyTimes = RowValues(rowKeyTimes, batch, nameof(rowKeyTimes), "CachedAttentionPerRow row key times");
        for (int b = 0; b < batch; b++)
            if (keyTimes[b] < queryTime || keyTimes[b] > capacity)
                throw new ArgumentOutOfRangeException(nameof(rowKeyTimes), keyTimes[b],
                    $"CachedAttentionPerRow: row {b}'s key time must be in [Tq = {queryTime}, Tmax = {capacity}]");
        var output = Allocate(q.Shape, Compute(q).DType);
        using var logSumExp = Allocate([1, heads, queryTime], q.DType);   // scratch, as in CachedAttention
        TensorScope.Detach(logSumExp);
        int queryRow = queryTime * heads * headDim, cacheRow = capacity * heads * headDim;
        for (int b = 0; b < batch; b++)
        {
            if (q.DType == DType.F64)
                CpuAttention.ForwardCached<double>(Span<double>(q).Slice(b * queryRow, queryRow), Span<double>(keyCache).Slice(b * cacheRow, cacheRow),
                    Span<double>(valueCache).Slice(b * cacheRow, cacheRow), Span<double>(output).Slice(b * queryRow, queryRow), Span<double>(logSumExp),
                    1, queryTime, keyTimes[b], capacity, heads, headDim);
            else
                CpuAttention.ForwardCached<float>(Span<float>(q).Slice(b * queryRow, queryRow), Span<float>(keyCache).Slice(b * cacheRow, cacheRow),
                    Span<float>(valueCache).Slice(b * cacheRow, cacheRow), Span<float>(output).Slice(b * queryRow, queryRow), Span<float>(logSumExp),
                    1, queryTime, keyTimes[b], capacity, heads, headDim);
        }
        return output;
    }

    // The shape rules the plain and per-row ops share; the message names the op that was called.
    private static (int Batch, int Time, int Capacity) RequireCacheFitsSource(Tensor source, Tensor cache, string op)
    {
        RequireRank(source, 4, $"{op} source [B, T, H, D]");
        RequireRank(cache, 4, $"{op} cache [B, Tmax, H, D]");
        if (cache.Size(0) != source.Size(0) || cache.Size(2) != source.Size(2) || cache.Size(3) != source.Size(3) || cache.DType != source.DType)
            throw new ArgumentException($"{op}: source [{source.ShapeText}] {source.DType} does not fit cache [{cache.ShapeText}] {cache.DType} (need the same B, H, D and dtype)");
        return (source.Size(0), source.Size(1), cache.Size(1));
    }

    private static (int Batch, int QueryTime, int Heads, int HeadDim, int Capacity) RequireCachesFitQuery(Tensor q, Tensor keyCache, Tensor valueCache)
    {
        RequireRank(q, 4, "CachedAttention q [B, Tq, H, D]");
        RequireRank(keyCache, 4, "CachedAttention key cache [B, Tmax, H, D]");
        RequireSameShape(keyCache, valueCache, "CachedAttention key and value caches");
        int batch = q.Size(0), queryTime = q.Size(1), heads = q.Size(2), headDim = q.Size(3);
        if (keyCache.Size(0) != batch || keyCache.Size(2) != heads || keyCache.Size(3) != headDim || keyCache.DType != q.DType)
            throw new ArgumentException($"CachedAttention: cache [{keyCache.ShapeText}] {keyCache.DType} does not fit q [{q.ShapeText}] {q.DType} (need the same B, H, D and dtype)");
        return (batch, queryTime, heads, headDim, keyCache.Size(1));
    }

    /// <summary>The values of a per-row I32 [B] tensor, checked for shape (<paramref name="name"/> is the argument's name).</summary>
    private static ReadOnlySpan<int> RowValues(Tensor values, int batch, string name, string what)
    {
        ArgumentNullException.ThrowIfNull(values, name);
        if (values.DType != DType.I32 || values.Rank != 1 || values.Size(0) != batch)
            throw new ArgumentException($"{what}: expected I32 [{batch}] (one per batch row), got [{values.ShapeText}] {values.DType}", name);
        return Span<int>(values);
    }
}
