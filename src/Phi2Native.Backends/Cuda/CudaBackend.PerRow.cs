using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Cuda;

// The per-row ops of batched generation (a KV cache whose rows hold different lengths) and SelectPositions, but for
// CachedAttentionPerRow (CudaBackend.Attention.cs). RotaryPerRow and CacheWritePerRow launch the per-row kernels of
// rotary.cu and cache.cu once for the whole batch, reading their I32 [B] positions on the device - no synchronizing
// copy per decode step - and each row gets bit for bit what the plain kernel gives it alone. As with
// CachedAttentionPerRow, positions the CPU backend refuses are not checked on the host (that would cost the sync):
// RotaryPerRow gives NaN rows for a negative offset, CacheWritePerRow skips a row that would leave the cache.
// SelectPositions still reads its [B, K] positions back to the host and checks them there.
public sealed partial class CudaBackend
{
    /// <inheritdoc/>
    /// <remarks>Any dtype. The positions are read back and checked on the host; the rows move as B x K device-to-device copies.</remarks>
    public Tensor SelectPositions(Tensor x, Tensor positions)
    {
        var px = Pointer(x, nameof(x));
        Pointer(positions, nameof(positions));
        if (x.Rank < 2) throw new ArgumentException($"SelectPositions: x must be [B, T, ...], got [{x.ShapeText}]", nameof(x));
        RequireIds(positions, "SelectPositions positions");
        int batch = x.Size(0), time = x.Size(1);
        if (positions.Rank != 2 || positions.Size(0) != batch)
            throw new ArgumentException($"SelectPositions: positions must be [B = {batch}, K], got [{positions.ShapeText}]", nameof(positions));
        int count = positions.Size(1);
        var indices = ReadInt32(positions, nameof(positions));
        for (int i = 0; i < indices.Length; i++)
            if (indices[i] < 0 || indices[i] >= time)
                throw new ArgumentOutOfRangeException(nameof(positions), indices[i],
                    $"SelectPositions: positions[{i / Math.Max(count, 1)}, {i % Math.Max(count, 1)}] = {indices[i]} is outside [0, T = {time})");
        var result = Allocate([batch, count, .. x.Shape[2..]], x.DType, nameof(x));
        // Row (b, t) of x starts at byte (b*T + t) * rowBytes; output row (b, k) at (b*K + k) * rowBytes.
        long rowBytes = (long)batch * time == 0 ? 0 : x.ElementCount / ((long)batch * time) * x.DType.SizeInBytes();
        if (rowBytes == 0 || result.ElementCount == 0) return result;
        var pr = Pointer(result, "result");
        for (int b = 0; b < batch; b++)
            for (int k = 0; k < count; k++)
                _device.CopyOnDevice(pr.Offset(((long)b * count + k) * rowBytes), px.Offset(((long)b * time + indices[b * count + k]) * rowBytes), rowBytes, _stream);
        return result;
    }

    /// <inheritdoc/>
    /// <remarks>
    /// F32 or BF16. One launch of rotary.cu's rotary_per_row; the offsets stay on the device (no synchronization). A
    /// negative offset, which the CPU backend refuses, is not checked on the host: that batch row's output is NaN.
    /// </remarks>
    public Tensor RotaryPerRow(Tensor x, int rotaryDim, double theta, Tensor rowOffsets)
    {
        var px = Pointer(x, nameof(x));
        RequireRank(x, 4, "RotaryPerRow input [B, T, H, D]");
        RequireDType(x, nameof(RotaryPerRow), nameof(x), DType.F32, DType.BF16);
        int batch = x.Size(0);
        var po = RowPointer(rowOffsets, batch, nameof(rowOffsets), "RotaryPerRow row offsets");
        var y = Allocate(x.Shape, x.DType, nameof(x));
        if (x.ElementCount == 0) return y;
        try
        {
            RotaryKernels.RotaryPerRow(_device, x.DType, px, Pointer(y, "y"), po, batch, x.Size(1), x.Size(2), x.Size(3), rotaryDim, theta, _stream);
        }
        catch
        {
            y.Dispose();
            throw;
        }
        return y;
    }

    /// <inheritdoc/>
    /// <remarks>
    /// F32 or BF16. One launch of cache.cu's cache_write_per_row; the positions stay on the device (no synchronization).
    /// A row whose rows [p, p + T) fall outside the cache, which the CPU backend refuses, is not checked on the host:
    /// that batch row is skipped and its cache rows keep what they held.
    /// </remarks>
    public void CacheWritePerRow(Tensor source, Tensor cache, Tensor rowPositions)
    {
        var ps = Pointer(source, nameof(source));
        var pc = Pointer(cache, nameof(cache));
        RequireRank(source, 4, "CacheWritePerRow source [B, T, H, D]");
        RequireRank(cache, 4, "CacheWritePerRow cache [B, Tmax, H, D]");
        int batch = source.Size(0), time = source.Size(1), capacity = cache.Size(1), heads = source.Size(2), headDim = source.Size(3);
        if (cache.Size(0) != batch || cache.Size(2) != heads || cache.Size(3) != headDim || cache.DType != source.DType)
            throw new ArgumentException($"CacheWritePerRow: source [{source.ShapeText}] {source.DType} does not fit cache [{cache.ShapeText}] {cache.DType} (need the same B, H, D and dtype)");
        RequireDType(source, nameof(CacheWritePerRow), nameof(source), DType.F32, DType.BF16);
        var pp = RowPointer(rowPositions, batch, nameof(rowPositions), "CacheWritePerRow row positions");
        if (source.ElementCount == 0) return;
        if (time > capacity)
            throw new ArgumentOutOfRangeException(nameof(rowPositions), $"CacheWritePerRow: T = {time} rows do not fit the cache's {capacity} at any position");
        CacheKernels.CacheWritePerRow(_device, source.DType, ps, pc, pp, batch, time, heads, headDim, capacity, _stream);
    }

    /// <summary>The device pointer of a per-row I32 [B] tensor on this backend, checked for shape (its values stay on the device).</summary>
    private DevicePtr RowPointer(Tensor values, int batch, string name, string what)
    {
        var pointer = Pointer(values, name);
        if (values.DType != DType.I32 || values.Rank != 1 || values.Size(0) != batch)
            throw new ArgumentException($"{what}: expected I32 [{batch}] (one per batch row), got [{values.ShapeText}] {values.DType}", name);
        return pointer;
    }
}
