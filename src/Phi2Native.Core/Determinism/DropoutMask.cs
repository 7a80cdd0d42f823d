// The dropout mask rule, one definition for every backend (the CPU kernel calls it; the CUDA launcher passes its
// threshold to kernels/dropout.cu, which computes the same draw): whether element i of a dropout call is kept
// depends only on (seed, i), so nothing is stored between forward and backward, any thread may handle any element,
// and the CPU and CUDA backends drop exactly the same elements.
//
//   draw:  z = seed + (i + 1) * 0x9E3779B97F4A7C15 (mod 2^64), then the SplitMix64 finalizer;
//          draw_i = z >> 40, the top 24 bits, so u_i = draw_i / 2^24 is a float in [0, 1) exactly
//   keep:  u_i >= p, evaluated exactly as the integer test draw_i >= ceil(p * 2^24) (KeepThreshold); a kernel is
//          passed that threshold rather than comparing a rounded float p
//   kept elements are scaled by 1 / (1 - p) (computed in double, rounded once to the element type), dropped ones are 0.
using System.Runtime.CompilerServices;

namespace Phi2Native.Determinism;

/// <summary>The counter-based dropout mask shared by the backends: element i survives iff <see cref="Draw"/>(seed, i) &gt;= <see cref="KeepThreshold"/>(p).</summary>
internal static class DropoutMask
{
    /// <summary>Whether element <paramref name="index"/> survives dropout with probability <paramref name="p"/> under
    /// <paramref name="seed"/>; the one definition of the mask.</summary>
    /// <exception cref="ArgumentOutOfRangeException">p is outside [0, 1).</exception>
    public static bool Keep(ulong seed, long index, double p) => Draw(seed, index) >= KeepThreshold(p);

    /// <summary>ceil(p * 2^24): element i is kept iff its 24-bit draw is at least this, which is exactly
    /// <c>u >= p</c> for u = draw / 2^24.</summary>
    /// <exception cref="ArgumentOutOfRangeException">p is outside [0, 1).</exception>
    public static uint KeepThreshold(double p)
    {
        if (!(p >= 0 && p < 1)) throw new ArgumentOutOfRangeException(nameof(p), p, "p must be in [0, 1).");
        return (uint)Math.Ceiling(p * 16777216.0);
    }

    /// <summary>The 24-bit draw of element <paramref name="index"/>: the top 24 bits of SplitMix64 at counter index + 1 from <paramref name="seed"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint Draw(ulong seed, long index) =>
        (uint)(SplitMix64.Finalize(seed + (ulong)(index + 1) * SplitMix64.Golden) >> 40);
}
