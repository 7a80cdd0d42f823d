// Dropout with a counter-based mask (resid_pdrop on the attention and MLP branches, LoRA dropout):
// whether element i is kept depends only on (seed, i), so nothing is stored between forward and
// backward, any thread may handle any element, and the CUDA kernel reproduces the mask bit for bit.
//
//   mask:  z = seed + (i + 1) * 0x9E3779B97F4A7C15 (mod 2^64), then the SplitMix64 finalizer
//          z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9; z = (z ^ (z >> 27)) * 0x94D049BB133111EB; z ^= z >> 31
//          u = (z >> 40) / 2^24 (a float in [0, 1), exactly);  keep iff u >= p
//   Forward(x [n], y [n], p, seed)     y_i = keep_i ? x_i / (1 - p) : 0
//   Backward(dy [n], dx [n] =, p, seed) dx_i = keep_i ? dy_i / (1 - p) : 0
//
// u is a multiple of 2^-24, so "u >= p" is evaluated exactly as the integer test
// (z >> 40) >= ceil(p * 2^24) (KeepThreshold); a CUDA kernel should be passed that threshold rather than
// compare a rounded float p. The 1/(1-p) scale is computed in double and rounded once to TFloat.
// Element-wise, so y may be x itself and dx may be dy.
using System.Numerics;

namespace Phi2Native.Backends.Cpu;

internal static class CpuDropout
{
    /// <summary>Elements per unit of parallel work.</summary>
    private const int Chunk = 4096;

    /// <summary>Zeroes each element with probability p and scales the rest by 1/(1-p).</summary>
    /// <param name="x">[n] input.</param>
    /// <param name="y">[n] output, overwritten; may be the same memory as <paramref name="x"/>.</param>
    /// <param name="p">Drop probability in [0, 1); 0 copies x.</param>
    /// <param name="seed">Mask seed; use a fresh one per call site and step.</param>
    /// <exception cref="ArgumentException">The lengths differ.</exception>
    /// <exception cref="ArgumentOutOfRangeException">p is outside [0, 1).</exception>
    public static void Forward<TFloat>(ReadOnlySpan<TFloat> x, Span<TFloat> y, double p, ulong seed)
        where TFloat : unmanaged, IFloatingPointIeee754<TFloat>
    {
        CpuKernelSupport.Length(y.Length, x.Length, nameof(y), "x.Length");
        Apply(x, y, p, seed);
    }

    /// <summary>Gradient of <see cref="Forward"/>: the same mask (recomputed from the seed) and scale.</summary>
    /// <param name="dy">[n] gradient of the output.</param>
    /// <param name="dx">[n] overwritten; may be the same memory as <paramref name="dy"/>.</param>
    /// <param name="p">The forward call's p.</param>
    /// <param name="seed">The forward call's seed.</param>
    /// <exception cref="ArgumentException">The lengths differ.</exception>
    /// <exception cref="ArgumentOutOfRangeException">p is outside [0, 1).</exception>
    public static void Backward<TFloat>(ReadOnlySpan<TFloat> dy, Span<TFloat> dx, double p, ulong seed)
        where TFloat : unmanaged, IFloatingPointIeee754<TFloat>
    {
        CpuKernelSupport.Length(dx.Length, dy.Length, nameof(dx), "dy.Length");
        Apply(dy, dx, p, seed);
    }

    /// <summary>Whether element <paramref name="index"/> survives dropout with probability
    /// <paramref name="p"/> under <paramref name="seed"/>; the one definition of the mask.</summary>
    /// <exception cref="ArgumentOutOfRangeException">p is outside [0, 1).</exception>
    public static bool Keep(ulong seed, long index, double p) => Bits24(seed, index) >= KeepThreshold(p);

    /// <summary>ceil(p * 2^24): element i is kept iff its 24-bit draw (z >> 40) is at least this,
    /// which is exactly <c>u >= p</c> for u = draw / 2^24.</summary>
    /// <exception cref="ArgumentOutOfRangeException">p is outside [0, 1).</exception>
    public static uint KeepThreshold(double p)
    {
        if (!(p >= 0 && p < 1)) throw new ArgumentOutOfRangeException(nameof(p), p, "p must be in [0, 1).");
        return (uint)Math.Ceiling(p * 16777216.0);
    }

    /// <summary>The top 24 bits of the SplitMix64 hash of (seed, index).</summary>
    private static uint Bits24(ulong seed, long index)
    {
        ulong z = seed + (ulong)(index + 1) * 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        z ^= z >> 31;
        return (uint)(z >> 40);
    }

    private static unsafe void Apply<TFloat>(ReadOnlySpan<TFloat> x, Span<TFloat> y, double p, ulong seed)
        where TFloat : unmanaged, IFloatingPointIeee754<TFloat>
    {
        uint threshold = KeepThreshold(p); // also validates p
        if (p == 0)
        {
            x.CopyTo(y);
            return;
        }
        TFloat scale = TFloat.CreateChecked(1.0 / (1.0 - p));
        int n = x.Length, chunks = (n + Chunk - 1) / Chunk;
        bool parallel = CpuKernelSupport.ShouldParallelize(chunks, 8L * n);
        fixed (TFloat* px = x, py = y)
        {
            TFloat* xp = px, yp = py;
            CpuKernelSupport.For(chunks, parallel, chunk =>
            {
                int start = chunk * Chunk, end = Math.Min(n, start + Chunk);
                for (int i = start; i < end; i++)
                    yp[i] = Bits24(seed, i) >= threshold ? xp[i] * scale : TFloat.Zero;
            });
        }
    }
}
