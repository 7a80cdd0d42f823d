using System.Runtime.CompilerServices;

namespace Phi2Native.Determinism;

/// <summary>
/// SplitMix64 (Steele, Lea and Flood, 2014): a 64-bit counter stepped by the golden ratio and a finalizer that turns
/// nearby inputs into unrelated outputs. Every seed derivation (<see cref="Seeds"/>) and every dropout mask
/// (<see cref="DropoutMask"/>) is built from these two pieces, so they are written once, here.
/// </summary>
internal static class SplitMix64
{
    /// <summary>The counter's step, 2^64 / phi rounded to odd.</summary>
    public const ulong Golden = 0x9E3779B97F4A7C15UL;

    /// <summary>SplitMix64's finalizer (Stafford's Mix13): a bijection on 64 bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Finalize(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
