namespace Phi2Native.Determinism;

/// <summary>
/// Every seed the engine derives from another, in one place. A run's seed fixes its data order, its adapters'
/// initialization and its dropout masks; the masks of each training forward, each layer and each adapter are derived
/// from it here, by the rule its <see cref="SeedPurpose"/> names.
/// </summary>
/// <remarks>
/// Mix(seed, value), used by several purposes, is SplitMix64's finalizer over seed ^ (value + 0x9E3779B97F4A7C15 +
/// (seed &lt;&lt; 6) + (seed &gt;&gt; 2)) (a boost::hash_combine-style mix): nearby values give unrelated seeds.
/// Arithmetic is modulo 2^64.
/// </remarks>
internal static class Seeds
{
    /// <summary>The seed for <paramref name="purpose"/> number <paramref name="index"/> (a layer, a count, an epoch, a row), derived from <paramref name="seed"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="index"/> is negative, or not 0 for a purpose that takes none, or the purpose is unknown.</exception>
    public static ulong Derive(ulong seed, SeedPurpose purpose, long index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ulong i = (ulong)index;
        return purpose switch
        {
            SeedPurpose.ModelDropout => NoIndex(index, purpose, seed * SplitMix64.Golden + 1),
            SeedPurpose.AdapterDropout => seed ^ ((i + 1) << 32),
            SeedPurpose.TrainingForward => Mix(seed, i),
            SeedPurpose.EmbeddingDropout => NoIndex(index, purpose, Mix(seed, ulong.MaxValue)),
            SeedPurpose.AttentionResidualDropout => Mix(seed, i),
            SeedPurpose.MlpResidualDropout => Mix(seed, i) ^ 0x5DEECE66DUL,
            SeedPurpose.LoraInputDropout => seed + i * SplitMix64.Golden,
            SeedPurpose.EpochShuffle => SplitMix64.Finalize(seed ^ (i * SplitMix64.Golden + 0x632BE59BD9B4E019UL)),
            SeedPurpose.SamplingRow => seed + i,
            _ => throw new ArgumentOutOfRangeException(nameof(purpose), purpose, "unknown seed purpose"),
        };
    }

    private static ulong Mix(ulong seed, ulong value) =>
        SplitMix64.Finalize(seed ^ (value + SplitMix64.Golden + (seed << 6) + (seed >> 2)));

    private static ulong NoIndex(long index, SeedPurpose purpose, ulong derived) =>
        index == 0 ? derived : throw new ArgumentOutOfRangeException(nameof(index), index, $"{purpose} takes no index; pass 0");
}
