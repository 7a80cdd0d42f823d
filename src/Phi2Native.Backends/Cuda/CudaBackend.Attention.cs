using Phi2Native.Tensors;

namespace Phi2Native.Backends.Cuda;

// The attention block's ops: partial rotary (kernels/rotary.cu), the KV-cache write (kernels/cache.cu) and causal
// attention, forward, backward and over a cache (kernels/attention.cu). Shapes: [B, T, H, D] activations,
// [B, Tmax, H, D] caches, [B, H, Tq] log-sum-exps (F32 whatever the activations' dtype: the softmax is fp32).
public sealed partial class CudaBackend
{
    /// <inheritdoc/>
    public Tensor Rotary(Tensor x, int rotaryDim, double theta, int positionOffset)
    {
        var px = Pointer(x, nameof(x));
        RequireRank(x, 4, "Rotary input [B, T, H, D]");
        RequireDType(x, nameof(Rotary), nameof(x), DType.F32, DType.BF16);
        var y = Allocate(x.Shape, x.DType, nameof(x));
        try
        {
            RotaryKernels.Rotary(_device, x.DType, px, Pointer(y, "y"), x.Size(0), x.Size(1), x.Size(2), x.Size(3), rotaryDim, theta, positionOffset, _stream);
        }
        catch
        {
            y.Dispose();
            throw;
        }
        return y;
    }

    /// <inheritdoc/>
    public void RotaryBackward(Tensor dOutput, Tensor dx, int rotaryDim, double theta, int positionOffset)
    {
        var pdy = Pointer(dOutput, nameof(dOutput));
        var pdx = Pointer(dx, nameof(dx));
        RequireRank(dOutput, 4, "RotaryBackward dOutput [B, T, H, D]");
        RequireDType(dOutput, nameof(RotaryBackward), nameof(dOutput), DType.F32, DType.BF16);
        RequireShape(dx, dOutput.Shape, "RotaryBackward dx (like dOutput)");
        RequireSameDType(dx, dOutput.DType, nameof(RotaryBackward), nameof(dx));
        var s = dOutput.Shape;
        RotaryKernels.RotaryBackward(_device, dOutput.DType, pdy, pdx, s[0], s[1], s[2], s[3], rotaryDim, theta, positionOffset, _stream);
    }

    /// <inheritdoc/>
    public void CacheWrite(Tensor source, Tensor cache, int position)
    {
        var ps = Pointer(source, nameof(source));
        var pc = Pointer(cache, nameof(cache));
        RequireRank(source, 4, "CacheWrite source [B, T, H, D]");
        RequireRank(cache, 4, "CacheWrite cache [B, Tmax, H, D]");
        int batch = source.Size(0), time = source.Size(1), capacity = cache.Size(1);
        if (cache.Size(0) != batch || cache.Size(2) != source.Size(2) || cache.Size(3) != source.Size(3) || cache.DType != source.DType)
            throw new ArgumentException($"CacheWrite: source [{source.ShapeText}] {source.DType} does not fit cache [{cache.ShapeText}] {cache.DType} (need the same B, H, D and dtype)");
        if (position < 0 || (long)position + time > capacity)
            throw new ArgumentOutOfRangeException(nameof(position), position, $"CacheWrite: rows [{position}, {(long)position + time}) are outside the cache's {capacity}");
        RequireDType(source, nameof(CacheWrite), nameof(source), DType.F32, DType.BF16);
        if (source.ElementCount == 0) return;
        CacheKernels.CacheWrite(_device, source.DType, ps, pc, batch, time, source.Size(2), source.Size(3), capacity, position, _stream);
    }

    /// <inheritdoc/>
    /// <remarks>q, k and v share a dtype (F32 or BF16); the output has it; logSumExp [B, H, Tq] is F32.</remarks>
    public Tensor Attention(Tensor q, Tensor k, Tensor v, out Tensor logSumExp)
    {
        var pq = Pointer(q, nameof(q));
        var pk = Pointer(k, nameof(k));
        var pv = Pointer(v, nameof(v));
        var (batch, queryTime, keyTime, heads, headDim) = AttentionShape(q, k, v, nameof(Attention));
        var output = Allocate(q.Shape, q.DType, nameof(q));
        logSumExp = Allocate([batch, heads, queryTime], DType.F32, nameof(logSumExp));
        if (q.ElementCount > 0)
            AttentionKernels.Attention(_device, q.DType, pq, pk, pv, Pointer(output, "output"), Pointer(logSumExp, nameof(logSumExp)),
                batch, queryTime, keyTime, heads, headDim, _stream);
        return output;
    }

    /// <inheritdoc/>
    /// <remarks>Every tensor but logSumExp (F32 [B, H, Tq]) has q's dtype; dk and dv are written as zeros when Tq is 0.</remarks>
    public void AttentionBackward(Tensor dOutput, Tensor q, Tensor k, Tensor v, Tensor output, Tensor logSumExp, Tensor? dq, Tensor? dk, Tensor? dv)
    {
        var pdy = Pointer(dOutput, nameof(dOutput));
        var pq = Pointer(q, nameof(q));
        var pk = Pointer(k, nameof(k));
        var pv = Pointer(v, nameof(v));
        var po = Pointer(output, nameof(output));
        var pl = Pointer(logSumExp, nameof(logSumExp));
        var pdq = OptionalPointer(dq, nameof(dq));
        var pdk = OptionalPointer(dk, nameof(dk));
        var pdv = OptionalPointer(dv, nameof(dv));
        var (batch, queryTime, keyTime, heads, headDim) = AttentionShape(q, k, v, nameof(AttentionBackward));
        foreach (var (tensor, like, name) in new[] { (dOutput, q, nameof(dOutput)), (output, q, nameof(output)), (dq, q, nameof(dq)), (dk, k, nameof(dk)), (dv, k, nameof(dv)) })
        {
            if (tensor is null) continue;
            RequireShape(tensor, like.Shape, $"AttentionBackward {name}");
            RequireSameDType(tensor, q.DType, nameof(AttentionBackward), name);
        }
        RequireShape(logSumExp, [batch, heads, queryTime], "AttentionBackward logSumExp");
        RequireSameDType(logSumExp, DType.F32, nameof(AttentionBackward), nameof(logSumExp));
        if (q.ElementCount == 0)
        {
            // No query attends to anything: the keys and values get no gradient.
            foreach (var (tensor, pointer) in new[] { (dk, pdk), (dv, pdv) })
                if (tensor is { ElementCount: > 0 }) _device.Fill(pointer, 0, ByteCount(tensor), _stream);
            return;
        }
        using var delta = Scratch(dq != null || dk != null ? (long)batch * heads * queryTime * sizeof(float) : 0);
        AttentionKernels.AttentionBackward(_device, q.DType, pdy, pq, pk, pv, po, pl, delta.Pointer, pdq, pdk, pdv,
            batch, queryTime, keyTime, heads, headDim, _stream);
    }

    /// <inheritdoc/>
    public Tensor CachedAttention(Tensor q, Tensor keyCache, Tensor valueCache, int keyTime)
    {
        var pq = Pointer(q, nameof(q));
        var pk = Pointer(keyCache, nameof(keyCache));
        var pv = Pointer(valueCache, nameof(valueCache));
        var (batch, queryTime, heads, headDim, capacity) = CachedAttentionShape(q, keyCache, valueCache, nameof(CachedAttention));
        if (keyTime < queryTime || keyTime > capacity)
            throw new ArgumentOutOfRangeException(nameof(keyTime), keyTime, $"CachedAttention: keyTime must be in [Tq = {queryTime}, Tmax = {capacity}]");
        var output = Allocate(q.Shape, q.DType, nameof(q));
        if (q.ElementCount > 0)
            AttentionKernels.CachedAttention(_device, q.DType, pq, pk, pv, Pointer(output, "output"), batch, queryTime, keyTime, capacity, heads, headDim, _stream);
        return output;
    }

    /// <inheritdoc/>
    /// <remarks>
    /// The key times stay on the device (attention.cu reads them): they are not checked, as IBackend allows; a row whose
    /// key time is outside [Tq, Tmax] gets NaN output instead of the CPU backend's exception, and reads nothing.
    /// </remarks>
    public Tensor CachedAttentionPerRow(Tensor q, Tensor keyCache, Tensor valueCache, Tensor rowKeyTimes)
    {
        var pq = Pointer(q, nameof(q));
        var pk = Pointer(keyCache, nameof(keyCache));
        var pv = Pointer(valueCache, nameof(valueCache));
        var pt = Pointer(rowKeyTimes, nameof(rowKeyTimes));
        var (batch, queryTime, heads, headDim, capacity) = CachedAttentionShape(q, keyCache, valueCache, nameof(CachedAttentionPerRow));
        if (rowKeyTimes.DType != DType.I32 || rowKeyTimes.Rank != 1 || rowKeyTimes.Size(0) != batch)
            throw new ArgumentException($"CachedAttentionPerRow row key times: expected I32 [{batch}] (one per batch row), got [{rowKeyTimes.ShapeText}] {rowKeyTimes.DType}", nameof(rowKeyTimes));
        if (capacity < queryTime)
            throw new ArgumentException($"CachedAttentionPerRow: the caches' {capacity} rows cannot hold Tq = {queryTime} queries", nameof(keyCache));
        var output = Allocate(q.Shape, q.DType, nameof(q));
        if (q.ElementCount > 0)
            AttentionKernels.CachedAttentionPerRow(_device, q.DType, pq, pk, pv, pt, Pointer(output, "output"), batch, queryTime, capacity, heads, headDim, _stream);
        return output;
    }

    /// <summary>The CPU backend's checks of cached attention: q [B, Tq, H, D], caches [B, Tmax, H, D] of q's B, H, D and dtype.</summary>
    private static (int Batch, int QueryTime, int Heads, int HeadDim, int Capacity) CachedAttentionShape(Tensor q, Tensor keyCache, Tensor valueCache, string op)
    {
        RequireRank(q, 4, $"{op} q [B, Tq, H, D]");
        RequireRank(keyCache, 4, $"{op} key cache [B, Tmax, H, D]");
        if (!keyCache.Shape.SequenceEqual(valueCache.Shape) || keyCache.DType != valueCache.DType)
            throw new ArgumentException($"{op} key and value caches: [{keyCache.ShapeText}] {keyCache.DType} and [{valueCache.ShapeText}] {valueCache.DType} differ");
        int batch = q.Size(0), queryTime = q.Size(1), heads = q.Size(2), headDim = q.Size(3), capacity = keyCache.Size(1);
        if (keyCache.Size(0) != batch || keyCache.Size(2) != heads || keyCache.Size(3) != headDim || keyCache.DType != q.DType)
            throw new ArgumentException($"{op}: cache [{keyCache.ShapeText}] {keyCache.DType} does not fit q [{q.ShapeText}] {q.DType} (need the same B, H, D and dtype)");
        RequireDType(q, op, nameof(q), DType.F32, DType.BF16);
        return (batch, queryTime, heads, headDim, capacity);
    }

    /// <summary>The CPU backend's shape checks of attention: q [B, Tq, H, D], k = v [B, Tk, H, D], Tk &gt;= Tq, one dtype.</summary>
    private static (int Batch, int QueryTime, int KeyTime, int Heads, int HeadDim) AttentionShape(Tensor q, Tensor k, Tensor v, string op)
    {
        RequireRank(q, 4, $"{op} q [B, Tq, H, D]");
        RequireRank(k, 4, $"{op} k [B, Tk, H, D]");
        if (!k.Shape.SequenceEqual(v.Shape) || k.DType != v.DType)
            throw new ArgumentException($"{op} k and v: [{k.ShapeText}] {k.DType} and [{v.ShapeText}] {v.DType} differ");
        int batch = q.Size(0), queryTime = q.Size(1), heads = q.Size(2), headDim = q.Size(3), keyTime = k.Size(1);
        if (k.Size(0) != batch || k.Size(2) != heads || k.Size(3) != headDim || keyTime < queryTime)
            throw new ArgumentException($"{op}: k [{k.ShapeText}] does not fit q [{q.ShapeText}] (need the same B, H, D and Tk >= Tq)");
        RequireDType(q, op, nameof(q), DType.F32, DType.BF16);
        RequireSameDType(k, q.DType, op, nameof(k));
        return (batch, queryTime, keyTime, heads, headDim);
    }
}
