namespace Phi2Native.DeviceChecks;

/// <summary>A named group of device checks (one static class's <c>All</c>, usually one kernel file's checks).</summary>
/// <param name="Name">Short, lower case, unique: the GPU runner runs each family in its own child process by this name.</param>
/// <param name="Checks">The family's checks, in order.</param>
public sealed record DeviceCheckFamily(string Name, IReadOnlyList<DeviceCheck> Checks);

/// <summary>
/// Every device check, in a fixed order, grouped in families. The emulated NUnit run and the GPU runner both enumerate
/// this list, so the GPU run's count must equal the emulated count; bench/gpu-check.sh fails when it does not.
/// Add a family by writing a static class with an <c>All</c> list beside the others and naming it here.
/// </summary>
public static class DeviceCheckCatalog
{
    /// <summary>The families, in order; names are unique.</summary>
    public static IReadOnlyList<DeviceCheckFamily> Families { get; } = BuildFamilies();

    /// <summary>All checks, family by family; names are unique.</summary>
    public static IReadOnlyList<DeviceCheck> All { get; } = BuildAll();

    private static IReadOnlyList<DeviceCheckFamily> BuildFamilies()
    {
        DeviceCheckFamily[] families =
        [
            new("elementwise", ElementwiseChecks.All),
            new("cast", CastChecks.All),
            new("reduction", ReductionChecks.All),
            new("decode-next", DecodeNextChecks.All),
            new("layernorm", LayerNormChecks.All),
            new("cross-entropy", CrossEntropyChecks.All),
            new("optimizer", OptimizerChecks.All),
            new("gelu", GeluChecks.All),
            new("linear-gelu", LinearGeluChecks.All),
            new("dropout", DropoutChecks.All),
            new("residual", ParallelResidualChecks.All),
            new("lora", LoraChecks.All),
            new("lora-qkv", LoraQkvChecks.All),
            new("mma", MmaChecks.All),
            new("blas", BlasChecks.All),
            // embedding.cu, rotary.cu, cache.cu, transpose.cu
            new("embedding", EmbeddingChecks.All),
            new("rotary", RotaryChecks.All),
            new("cache", CacheChecks.All),
            new("qkv", QkvChecks.All),
            new("transpose", TransposeChecks.All),
            // attention.cu, attention_mma.cu; through a KV cache also attention_decode.cu
            new("attention", AttentionChecks.All),
            new("cached-attention", CachedAttentionChecks.All),
            new("device-layer", DeviceLayerChecks.All),
            // the CUDA backend over the device (cuBLAS(Lt) mapping, uploads, a chain through the tape)
            new("backend", BackendChecks.All),
        ];
        var duplicate = families.GroupBy(f => f.Name).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null) throw new InvalidOperationException($"two device check families are named '{duplicate.Key}'");
        return families;
    }

    private static IReadOnlyList<DeviceCheck> BuildAll()
    {
        var all = Families.SelectMany(f => f.Checks).ToList();
        var duplicate = all.GroupBy(c => c.Name).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null) throw new InvalidOperationException($"two device checks are named '{duplicate.Key}'");
        return all;
    }
}
