using Phi2Native.Tensors;

namespace Phi2Native.Backends.Cpu;

// The KV-cache ops (inference only): a cache is [B, Tmax, H, D]; row t of batch b starts at element (b*Tmax + t)*H*D.
public sealed partial class CpuBackend
{
    /// <inheritdoc/>
    public void CacheWrite(Tensor source, Tensor cache, int position)
    {
        RequireRank(source, 4, "CacheWrite source [B, T, H, D]");
        RequireRank(cache, 4, "CacheWrite cache [B, Tmax, H, D]");
        int batch = source.Size(0), time = source.Size(1), capacity = cache.Size(1);
        if (cache.Size(0) != batch || cache.Size(2) != source.Size(2) || cache.Size(3) != source.Size(3) || cache.DType != source.DType)
            throw new ArgumentException($"CacheWrite: source [{source.ShapeText}] {source.DType} does not fit cache [{cache.ShapeText}] {cache.DType} (need the same B, H, D and dtype)");
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
        RequireRank(q, 4, "CachedAttention q [B, Tq, H, D]");
        RequireRank(keyCache, 4, "CachedAttention key cache [B, Tmax, H, D]");
        RequireSameShape(keyCache, valueCache, "CachedAttention key and value caches");
        int batch = q.Size(0), queryTime = q.Size(1), heads = q.Size(2), headDim = q.Size(3), capacity = keyCache.Size(1);
        if (keyCache.Size(0) != batch || keyCache.Size(2) != heads || keyCache.Size(3) != headDim || keyCache.DType != q.DType)
            throw new ArgumentException($"CachedAttention: cache [{keyCache.ShapeText}] {keyCache.DType} does not fit q [{q.ShapeText}] {q.DType} (need the same B, H, D and dtype)");
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
}
