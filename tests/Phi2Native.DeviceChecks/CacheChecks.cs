using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.KvCache;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.DeviceChecks;

/// <summary>
/// kernels/cache.cu through <see cref="CacheKernels"/>, against the CPU backend's <see cref="KvCacheOp.Write"/>: the
/// whole cache after the write, bit for bit, so rows outside [p, p + T) must keep what they held. Every row at one
/// position (a prefill at 0, a write in the middle, a one-token decode step into the last row, a write that fills the
/// cache) and a different position per batch row (0, the last valid one, and rows outside the cache, which are skipped).
/// </summary>
public static class CacheChecks
{
    /// <summary>The checks of this family.</summary>
    public static IReadOnlyList<DeviceCheck> All { get; } =
    [
        Check(DType.F32, batch: 2, time: 4, heads: 3, headDim: 5, capacity: 9, position: 0),
        Check(DType.F32, batch: 2, time: 4, heads: 3, headDim: 5, capacity: 9, position: 3),
        Check(DType.F32, batch: 3, time: 1, heads: 2, headDim: 80, capacity: 7, position: 6),
        Check(DType.F32, batch: 1, time: 6, heads: 2, headDim: 7, capacity: 6, position: 0),
        Check(DType.BF16, batch: 2, time: 4, heads: 3, headDim: 5, capacity: 9, position: 3),
        Check(DType.BF16, batch: 3, time: 1, heads: 2, headDim: 80, capacity: 7, position: 6),
        PerRow(DType.F32, time: 1, heads: 2, headDim: 80, capacity: 7, [0, 6, 3, 5]),
        PerRow(DType.F32, time: 3, heads: 3, headDim: 5, capacity: 9, [6, 0, 2]),
        PerRow(DType.F32, time: 2, heads: 2, headDim: 7, capacity: 6, [4, -1, 5, 0]),
        PerRow(DType.BF16, time: 1, heads: 2, headDim: 80, capacity: 7, [6, 0, 2]),
        PerRow(DType.BF16, time: 2, heads: 3, headDim: 5, capacity: 5, [3, 7, 0]),
    ];

    /// <summary>
    /// cache_write against the CPU's, the whole cache bit for bit; a row whose position would leave the cache (the CPU
    /// throws) expects that row's cache untouched.
    /// </summary>
    private static DeviceCheck PerRow(DType dtype, int time, int heads, int headDim, int capacity, int[] positions)
    {
        string kernel = $"cache_write_{KernelName.Suffix(dtype)}";
        int batch = positions.Length;
        return new($"{kernel} [{batch}, {time}, {heads}, {headDim}] into [{batch}, {capacity}, {heads}, {headDim}] at [{string.Join(", ", positions)}]",
            [kernel], device => RunPerRow(device, dtype, time, heads, headDim, capacity, positions));
    }

    private static CheckResult RunPerRow(IDeviceApi device, DType dtype, int time, int heads, int headDim, int capacity, int[] positions)
    {
        int batch = positions.Length;
        float[] source = TestData.Uniform(batch * time * heads * headDim, seed: 1700 + capacity);
        float[] prior = TestData.Uniform(batch * capacity * heads * headDim, seed: 1800 + time, scale: 5f);
        using var dSource = DeviceBuffer.Upload(device, dtype, source);
        using var dCache = DeviceBuffer.Upload(device, dtype, prior);
        using var rows = DeviceBuffer.Upload(device, positions);
        CacheKernels.CacheWrite(device, dtype, dSource.Pointer, dCache.Pointer, rows.Pointer, batch, time, heads, headDim, capacity);

        // The CPU throws for a row outside the cache: give it the good rows only (a bad row's cache is left as it was).
        bool[] bad = positions.Select(p => p < 0 || (long)p + time > capacity).ToArray();
        int[] good = Enumerable.Range(0, batch).Where(b => !bad[b]).ToArray();
        int sourceRow = time * heads * headDim, cacheRow = capacity * heads * headDim;
        float[] expected = CpuReference.RoundTrip(dtype, prior);
        if (good.Length > 0)
        {
            using var cpu = new CpuReference();
            float[] goodSource = good.SelectMany(b => source.Skip(b * sourceRow).Take(sourceRow)).ToArray();
            float[] goodPrior = good.SelectMany(b => prior.Skip(b * cacheRow).Take(cacheRow)).ToArray();
            int[] goodPositions = good.Select(b => positions[b]).ToArray();
            using var cs = cpu.Stored(dtype, goodSource, good.Length, time, heads, headDim);
            using var cc = cpu.Stored(dtype, goodPrior, good.Length, capacity, heads, headDim);
            using var cp = cpu.Backend.FromBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(goodPositions.AsSpan()), DType.I32, [good.Length], DType.I32);
            KvCacheOp.Write(cs, cc, cp);
            float[] written = cc.ToSingleArray();
            for (int g = 0; g < good.Length; g++)
                written.AsSpan(g * cacheRow, cacheRow).CopyTo(expected.AsSpan(good[g] * cacheRow, cacheRow));
        }
        return CheckResult.CompareBits("cache", dCache.Download(), expected);
    }

    /// <summary>Every one of <paramref name="batch"/> rows at <paramref name="position"/>.</summary>
    private static DeviceCheck Check(DType dtype, int batch, int time, int heads, int headDim, int capacity, int position) =>
        PerRow(dtype, time, heads, headDim, capacity, [.. Enumerable.Repeat(position, batch)]);
}
