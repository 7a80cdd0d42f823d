using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Cuda;

// The per-row ops of batched generation (a KV cache whose rows hold different lengths) and SelectPositions, but for
// CachedAttentionPerRow, whose kernel reads the key times on the device (CudaBackend.Attention.cs). rotary.cu and
// cache.cu have no per-row form yet: these ops read their small I32 [B] (or [B, K]) position tensor back to the host
// (one synchronizing copy of a few bytes, checked there as the CPU backend checks it) and run the plain kernel once
// per batch row on that row's slices - batch row b is a contiguous [T, H, D] block of the input and a contiguous
// [Tmax, H, D] block of the cache - so a row gets bit for bit what it gets alone, as on the CPU. Generation reads the
// logits back every step anyway, so the extra synchronization costs little; per-row kernels would remove it.
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
    /// <remarks>F32 or BF16. The offsets are read back and checked on the host; rotary.cu runs once per batch row.</remarks>
    public Tensor RotaryPerRow(Tensor x, int rotaryDim, double theta, Tensor rowOffsets)
    {
        var px = Pointer(x, nameof(x));
        RequireRank(x, 4, "RotaryPerRow input [B, T, H, D]");
        RequireDType(x, nameof(RotaryPerRow), nameof(x), DType.F32, DType.BF16);
        int batch = x.Size(0);
        var offsets = RowValues(rowOffsets, batch, nameof(rowOffsets), "RotaryPerRow row offsets");
        for (int b = 0; b < batch; b++)
            if (offsets[b] < 0)
                throw new ArgumentOutOfRangeException(nameof(rowOffsets), offsets[b], $"RotaryPerRow: row {b}'s position offset must be >= 0");
        var y = Allocate(x.Shape, x.DType, nameof(x));
        long rowBytes = batch == 0 ? 0 : ByteCount(x) / batch;
        if (rowBytes == 0) return y;
        try
        {
            var py = Pointer(y, "y");
            for (int b = 0; b < batch; b++)
                RotaryKernels.Rotary(_device, x.DType, px.Offset(b * rowBytes), py.Offset(b * rowBytes), 1, x.Size(1), x.Size(2), x.Size(3),
                    rotaryDim, theta, offsets[b], _stream);
        }
        catch
        {
            y.Dispose();
            throw;
        }
        return y;
    }

    /// <inheritdoc/>
    /// <remarks>F32 or BF16. The positions are read back and checked on the host; cache.cu runs once per batch row.</remarks>
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
        var positions = RowValues(rowPositions, batch, nameof(rowPositions), "CacheWritePerRow row positions");
        for (int b = 0; b < batch; b++)
            if (positions[b] < 0 || (long)positions[b] + time > capacity)
                throw new ArgumentOutOfRangeException(nameof(rowPositions), positions[b],
                    $"CacheWritePerRow: row {b}'s rows [{positions[b]}, {(long)positions[b] + time}) are outside the cache's {capacity}");
        if (source.ElementCount == 0) return;
        long sourceRow = ByteCount(source) / batch, cacheRow = ByteCount(cache) / batch;
        for (int b = 0; b < batch; b++)
            CacheKernels.CacheWrite(_device, source.DType, ps.Offset(b * sourceRow), pc.Offset(b * cacheRow), 1, time, heads, headDim, capacity, positions[b], _stream);
    }

    /// <summary>The values of a per-row I32 [B] tensor on this backend, read back to the host and checked for shape.</summary>
    private int[] RowValues(Tensor values, int batch, string name, string what)
    {
        Pointer(values, name);
        if (values.DType != DType.I32 || values.Rank != 1 || values.Size(0) != batch)
            throw new ArgumentException($"{what}: expected I32 [{batch}] (one per batch row), got [{values.ShapeText}] {values.DType}", name);
        return ReadInt32(values, name);
    }
}
