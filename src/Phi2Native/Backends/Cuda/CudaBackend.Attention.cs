using Phi2Native.Tensors;

namespace Phi2Native.Backends.Cuda;

// The attention block's ops: partial rotary (kernels/rotary.cu), the KV-cache write (kernels/cache.cu) and attention
// itself, whose kernels (AttentionKernels) are not built yet: those ops refuse with NotSupportedException naming them.
// Shapes: [B, T, H, D] activations, [B, Tmax, H, D] caches.
public sealed partial class CudaBackend
{
    private const string MissingAttention =
        "the CUDA backend needs the attention kernels (kernels/attention.cu, AttentionKernels), which are not built yet";

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
    /// <exception cref="NotSupportedException">Until the attention kernels (AttentionKernels) are built.</exception>
    public Tensor Attention(Tensor q, Tensor k, Tensor v, out Tensor logSumExp)
    {
        Pointer(q, nameof(q));
        Pointer(k, nameof(k));
        Pointer(v, nameof(v));
        throw new NotSupportedException($"{nameof(Attention)}: {MissingAttention}");
    }

    /// <inheritdoc/>
    /// <exception cref="NotSupportedException">Until the attention kernels (AttentionKernels) are built.</exception>
    public void AttentionBackward(Tensor dOutput, Tensor q, Tensor k, Tensor v, Tensor output, Tensor logSumExp, Tensor? dq, Tensor? dk, Tensor? dv)
    {
        Pointer(dOutput, nameof(dOutput));
        throw new NotSupportedException($"{nameof(AttentionBackward)}: {MissingAttention}");
    }

    /// <inheritdoc/>
    /// <exception cref="NotSupportedException">Until the attention kernels (AttentionKernels) are built.</exception>
    public Tensor CachedAttention(Tensor q, Tensor keyCache, Tensor valueCache, int keyTime)
    {
        Pointer(q, nameof(q));
        Pointer(keyCache, nameof(keyCache));
        Pointer(valueCache, nameof(valueCache));
        throw new NotSupportedException($"{nameof(CachedAttention)}: {MissingAttention}");
    }

    /// <inheritdoc/>
    /// <exception cref="NotSupportedException">Until the attention kernels (AttentionKernels) are built.</exception>
    public Tensor CachedAttentionPerRow(Tensor q, Tensor keyCache, Tensor valueCache, Tensor rowKeyTimes)
    {
        Pointer(q, nameof(q));
        Pointer(keyCache, nameof(keyCache));
        Pointer(valueCache, nameof(valueCache));
        Pointer(rowKeyTimes, nameof(rowKeyTimes));
        throw new NotSupportedException($"{nameof(CachedAttentionPerRow)}: {MissingAttention}");
    }
}
