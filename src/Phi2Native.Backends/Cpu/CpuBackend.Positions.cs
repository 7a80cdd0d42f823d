using Phi2Native.Tensors;

namespace Phi2Native.Backends.Cpu;

// Gathering positions along dim 1 (inference only): x [B, T, ...] is B x T contiguous rows of `rest` elements.
public sealed partial class CpuBackend
{
    /// <inheritdoc/>
    public Tensor SelectPositions(Tensor x, Tensor positions)
    {
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(positions);
        if (x.Rank < 2) throw new ArgumentException($"SelectPositions: x must be [B, T, ...], got [{x.ShapeText}]", nameof(x));
        RequireIds(positions, "SelectPositions positions");
        int batch = x.Size(0), time = x.Size(1);
        if (positions.Rank != 2 || positions.Size(0) != batch)
            throw new ArgumentException($"SelectPositions: positions must be [B = {batch}, K], got [{positions.ShapeText}]", nameof(positions));
        int count = positions.Size(1);
        var indices = Span<int>(positions);
        for (int i = 0; i < indices.Length; i++)
            if (indices[i] < 0 || indices[i] >= time)
                throw new ArgumentOutOfRangeException(nameof(positions), indices[i],
                    $"SelectPositions: positions[{i / Math.Max(count, 1)}, {i % Math.Max(count, 1)}] = {indices[i]} is outside [0, T = {time})");
        int[] shape = [batch, count, .. x.Shape[2..]];
        var result = Allocate(shape, x.DType);
        // Row (b, t) of x starts at byte (b*T + t) * rowBytes; output row (b, k) at (b*K + k) * rowBytes.
        long rowBytes = (long)batch * time == 0 ? 0 : x.ElementCount / ((long)batch * time) * x.DType.SizeInBytes();
        Span<byte> from = Bytes(x), to = Bytes(result);
        for (int b = 0; b < batch; b++)
            for (int k = 0; k < count; k++)
                from.Slice((int)(((long)b * time + indices[b * count + k]) * rowBytes), (int)rowBytes)
                    .CopyTo(to.Slice((int)(((long)b * count + k) * rowBytes), (int)rowBytes));
        return result;
    }
}
