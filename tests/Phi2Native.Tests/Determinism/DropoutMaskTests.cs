using NUnit.Framework;
using Phi2Native.Determinism;

namespace Phi2Native.Tests.Determinism;

/// <summary>The dropout mask rule every backend shares, against its formula as written in kernels/dropout.cu.</summary>
[TestFixture]
public class DropoutMaskTests
{
    /// <summary>The mask exactly as the spec writes it (the CUDA kernel's contract), float u included.</summary>
    internal static bool SpecKeep(ulong seed, long i, double p)
    {
        ulong z = seed + (ulong)(i + 1) * 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        z ^= z >> 31;
        float u = (z >> 40) * (1f / 16777216f);
        return u >= p;
    }

    [Test]
    public void Keep_MatchesTheSpecFormula()
    {
        foreach (double p in new[] { 0.0, 1e-9, 0.1, 0.5, 0.9, 0.999999 })
        foreach (ulong seed in new ulong[] { 0, 1, 42, ulong.MaxValue })
        {
            long firstMismatch = -1;
            for (long i = 0; i < 20_000 && firstMismatch < 0; i++)
                if (DropoutMask.Keep(seed, i, p) != SpecKeep(seed, i, p)) firstMismatch = i;
            Assert.That(firstMismatch, Is.EqualTo(-1), $"first index where Keep differs from the spec, p {p} seed {seed}");
        }
        Assert.That(DropoutMask.KeepThreshold(0.5), Is.EqualTo(1u << 23));
        // Known value of the first SplitMix64 output for seed 0 (0xE220A8397B1DCDAF): top 24 bits 0xE220A8.
        Assert.That(DropoutMask.Keep(0, 0, 0xE220A8 / 16777216.0), Is.True);
        Assert.That(DropoutMask.Keep(0, 0, 0xE220A9 / 16777216.0), Is.False);
    }
}
