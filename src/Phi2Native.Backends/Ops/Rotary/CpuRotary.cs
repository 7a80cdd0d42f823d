// Partial rotary position embedding, half-split (GPT-NeoX) convention, as HF PhiAttention applies it
// to q and k: in each head, dims [0, rd) rotate and dims [rd, D) pass through unchanged.
//
//   Forward(x [B,T,H,D], y [B,T,H,D], ..., rotaryDim rd, theta, positionOffset)
//       half = rd/2, p = positionOffset + t, angle_j = p / theta^(2j/rd) (j < half, in double)
//       y[j]      = x[j]      * cos(angle_j) - x[j+half] * sin(angle_j)
//       y[j+half] = x[j+half] * cos(angle_j) + x[j]      * sin(angle_j)
//   Backward(dy [B,T,H,D], dx [B,T,H,D] =, same dims)
//       the transposed (= inverse) rotation: the same formula with sin negated.
//
// Backward needs nothing saved: the rotation is linear and depends only on positions. y may be x
// itself (exact overlap) for in-place use, and dx may be dy.
using System.Buffers;
using System.Numerics;
using Phi2Native.Backends.Cpu;
using Phi2Native.Tensors;

using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
namespace Phi2Native.Backends.Ops.Rotary;

internal static class CpuRotary
{
    /// <summary><see cref="RotaryOp.Forward"/> on the CPU backend, the contract checked: each batch row at its own offset.</summary>
    public static Tensor Forward(CpuBackend cpu, Tensor x, int rotaryDim, double theta, Tensor? positions)
    {
        var y = cpu.Allocate(x.Shape, x.DType);
        PerRow(x, y, rotaryDim, theta, positions, inverse: false);
        return y;
    }

    /// <summary><see cref="RotaryOp"/>'s backward on the CPU backend, the contract checked.</summary>
    public static void Backward(Tensor dOutput, Tensor dx, int rotaryDim, double theta, Tensor? positions) =>
        PerRow(dOutput, dx, rotaryDim, theta, positions, inverse: true);

    // Batch row b is a contiguous [T, H, D] block, rotated on its own at positions[b] + t, so a row gets bit for bit
    // what it gets alone (batched generation relies on it).
    private static void PerRow(Tensor x, Tensor y, int rotaryDim, double theta, Tensor? positions, bool inverse)
    {
        int batch = x.Size(0), time = x.Size(1), heads = x.Size(2), headDim = x.Size(3), rowElements = time * heads * headDim;
        ReadOnlySpan<int> offsets = positions is null ? default : CpuBackend.Span<int>(positions);
        for (int b = 0; b < batch; b++)
        {
            int offset = positions is null ? 0 : offsets[b];
            if (offset < 0) throw new ArgumentOutOfRangeException(nameof(positions), offset, $"Rotary: row {b}'s position must be >= 0");
            if (x.DType == DType.F64)
                Rotate(CpuBackend.Span<double>(x).Slice(b * rowElements, rowElements), CpuBackend.Span<double>(y).Slice(b * rowElements, rowElements),
                    1, time, heads, headDim, rotaryDim, theta, offset, inverse, nameof(x), nameof(y));
            else
                Rotate(CpuBackend.Span<float>(x).Slice(b * rowElements, rowElements), CpuBackend.Span<float>(y).Slice(b * rowElements, rowElements),
                    1, time, heads, headDim, rotaryDim, theta, offset, inverse, nameof(x), nameof(y));
        }
    }

    /// <summary>Rotates dims [0, rotaryDim) of every head by its position's angles.</summary>
    /// <param name="x">[B, T, H, D] input (q or k after the head split).</param>
    /// <param name="y">[B, T, H, D] output, overwritten; may be the same memory as <paramref name="x"/>.</param>
    /// <param name="batch">B.</param>
    /// <param name="time">T.</param>
    /// <param name="heads">H.</param>
    /// <param name="headDim">D.</param>
    /// <param name="rotaryDim">rd: even, 0 &lt;= rd &lt;= D (0 copies x through).</param>
    /// <param name="theta">rope_theta (10000 for Phi-2), &gt; 0.</param>
    /// <param name="positionOffset">Absolute position of t = 0 (the KV-cache length when decoding).</param>
    /// <exception cref="ArgumentException">A span length does not match the dims.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A dim, rotaryDim, theta or the offset is out of range.</exception>
    public static void Forward<TFloat>(ReadOnlySpan<TFloat> x, Span<TFloat> y, int batch, int time, int heads,
        int headDim, int rotaryDim, double theta, int positionOffset)
        where TFloat : unmanaged, IFloatingPointIeee754<TFloat> =>
        Rotate(x, y, batch, time, heads, headDim, rotaryDim, theta, positionOffset, inverse: false, nameof(x), nameof(y));

    /// <summary>Gradient of <see cref="Forward"/>: rotates each position back by its angles.</summary>
    /// <param name="dy">[B, T, H, D] gradient of the output.</param>
    /// <param name="dx">[B, T, H, D] input gradient, overwritten; may be the same memory as <paramref name="dy"/>.</param>
    /// <param name="batch">B.</param>
    /// <param name="time">T.</param>
    /// <param name="heads">H.</param>
    /// <param name="headDim">D.</param>
    /// <param name="rotaryDim">rd, as in the forward call.</param>
    /// <param name="theta">rope_theta, as in the forward call.</param>
    /// <param name="positionOffset">As in the forward call.</param>
    /// <exception cref="ArgumentException">A span length does not match the dims.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A dim, rotaryDim, theta or the offset is out of range.</exception>
    public static void Backward<TFloat>(ReadOnlySpan<TFloat> dy, Span<TFloat> dx, int batch, int time, int heads,
        int headDim, int rotaryDim, double theta, int positionOffset)
        where TFloat : unmanaged, IFloatingPointIeee754<TFloat> =>
        Rotate(dy, dx, batch, time, heads, headDim, rotaryDim, theta, positionOffset, inverse: true, nameof(dy), nameof(dx));

    private static unsafe void Rotate<TFloat>(ReadOnlySpan<TFloat> x, Span<TFloat> y, int batch, int time, int heads,
        int headDim, int rotaryDim, double theta, int positionOffset, bool inverse, string xName, string yName)
        where TFloat : unmanaged, IFloatingPointIeee754<TFloat>
    {
        CpuKernelSupport.NonNegative(batch, nameof(batch));
        CpuKernelSupport.NonNegative(time, nameof(time));
        CpuKernelSupport.NonNegative(heads, nameof(heads));
        CpuKernelSupport.NonNegative(headDim, nameof(headDim));
        CpuKernelSupport.NonNegative(positionOffset, nameof(positionOffset));
        if (rotaryDim < 0 || rotaryDim > headDim || rotaryDim % 2 != 0)
            throw new ArgumentOutOfRangeException(nameof(rotaryDim), rotaryDim,
                $"rotaryDim must be even and in [0, headDim = {headDim}].");
        if (rotaryDim > 0 && !(theta > 0 && double.IsFinite(theta)))
            throw new ArgumentOutOfRangeException(nameof(theta), theta, "theta must be finite and > 0.");
        long size = (long)batch * time * heads * headDim;
        CpuKernelSupport.Length(x.Length, size, xName, "[B, T, H, D]");
        CpuKernelSupport.Length(y.Length, size, yName, "[B, T, H, D]");
        if (size == 0) return;
        if (rotaryDim == 0)
        {
            x.CopyTo(y);
            return;
        }

        int half = rotaryDim / 2;
        // cos/sin per (t, j), built once per call in double and rounded once to TFloat: cheap next to
        // the B*H rows that reuse each entry. The inverse rotation is the same one with -sin.
        TFloat[] cos = ArrayPool<TFloat>.Shared.Rent(time * half);
        TFloat[] sin = ArrayPool<TFloat>.Shared.Rent(time * half);
        TFloat[] negSin = ArrayPool<TFloat>.Shared.Rent(time * half);
        try
        {
            for (int j = 0; j < half; j++)
            {
                double invFreq = 1.0 / Math.Pow(theta, 2.0 * j / rotaryDim);
                for (int t = 0; t < time; t++)
                {
                    double angle = (double)(positionOffset + (long)t) * invFreq;
                    double s = inverse ? -Math.Sin(angle) : Math.Sin(angle);
                    cos[t * half + j] = TFloat.CreateChecked(Math.Cos(angle));
                    sin[t * half + j] = TFloat.CreateChecked(s);
                    negSin[t * half + j] = TFloat.CreateChecked(-s);
                }
            }

            int rowCount = batch * time, rowLength = heads * headDim;
            bool parallel = CpuKernelSupport.ShouldParallelize(rowCount, size);
            fixed (TFloat* px = x, py = y)
            {
                TFloat* xp = px, yp = py;
                CpuKernelSupport.For(rowCount, parallel, row =>
                {
                    int t = row % time;
                    var c = new ReadOnlySpan<TFloat>(cos, t * half, half);
                    var s = new ReadOnlySpan<TFloat>(sin, t * half, half);
                    var ns = new ReadOnlySpan<TFloat>(negSin, t * half, half);
                    // x1 is saved before y1 overwrites it, which is what makes y == x work.
                    Span<TFloat> x1Copy = stackalloc TFloat[half];
                    for (int h = 0; h < heads; h++)
                    {
                        long offset = (long)row * rowLength + (long)h * headDim;
                        var xh = new ReadOnlySpan<TFloat>(xp + offset, headDim);
                        var yh = new Span<TFloat>(yp + offset, headDim);
                        ReadOnlySpan<TFloat> x1 = xh[..half], x2 = xh.Slice(half, half);
                        Span<TFloat> y1 = yh[..half], y2 = yh.Slice(half, half);
                        x1.CopyTo(x1Copy);
                        TensorPrimitives.Multiply(x1, c, y1);
                        TensorPrimitives.MultiplyAdd(x2, ns, y1, y1);
                        TensorPrimitives.Multiply(x2, c, y2);
                        TensorPrimitives.MultiplyAdd(x1Copy, s, y2, y2);
                        xh[rotaryDim..].CopyTo(yh[rotaryDim..]);
                    }
                });
            }
        }
        finally
        {
            ArrayPool<TFloat>.Shared.Return(cos);
            ArrayPool<TFloat>.Shared.Return(sin);
            ArrayPool<TFloat>.Shared.Return(negSin);
        }
    }
}
