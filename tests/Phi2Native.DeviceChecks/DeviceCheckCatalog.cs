namespace Phi2Native.DeviceChecks;

/// <summary>
/// Every device check, in a fixed order. The emulated NUnit run and the GPU runner both enumerate this list, so the
/// GPU run's count must equal the emulated count; bench/gpu-check.sh fails when it does not.
/// Add a family by writing a static class with an <c>All</c> list beside the others and naming it here.
/// </summary>
public static class DeviceCheckCatalog
{
    /// <summary>All checks; names are unique.</summary>
    public static IReadOnlyList<DeviceCheck> All { get; } = Build();

    private static IReadOnlyList<DeviceCheck> Build()
    {
        IEnumerable<DeviceCheck>[] families =
        [
            ElementwiseChecks.All,
            CastChecks.All,
            ReductionChecks.All,
            LayerNormChecks.All,
            CrossEntropyChecks.All,
            AdamWChecks.All,
            GeluChecks.All,
            DropoutChecks.All,
            MmaChecks.All,
            BlasChecks.All,
            // embedding.cu, rotary.cu, cache.cu, transpose.cu
            EmbeddingChecks.All,
            RotaryChecks.All,
            CacheChecks.All,
            TransposeChecks.All,
            // attention.cu
            AttentionChecks.All,
            DeviceLayerChecks.All,
            // the CUDA backend over the device (cuBLAS(Lt) mapping, uploads, a chain through the tape)
            BackendChecks.All,
        ];
        var all = families.SelectMany(f => f).ToList();
        var duplicate = all.GroupBy(c => c.Name).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null) throw new InvalidOperationException($"two device checks are named '{duplicate.Key}'");
        return all;
    }
}
