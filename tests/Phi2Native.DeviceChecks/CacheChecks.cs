using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.DeviceChecks;

/// <summary>
/// kernels/cache.cu through <see cref="CacheKernels"/>, against the CPU backend's CacheWrite: the whole cache after the
/// write, bit for bit, so rows outside [position, position + T) must keep what they held. A prefill at 0, a write in
/// the middle, a one-token decode step into the last row, and a write that fills the cache.
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
    ];

    private static DeviceCheck Check(DType dtype, int batch, int time, int heads, int headDim, int capacity, int position)
    {
        string kernel = $"cache_write_{KernelName.Suffix(dtype)}";
        return new($"{kernel} [{batch}, {time}, {heads}, {headDim}] into [{batch}, {capacity}, {heads}, {headDim}] at {position}", [kernel],
            device => Run(device, dtype, batch, time, heads, headDim, capacity, position));
    }

    private static CheckResult Run(IDeviceApi device, DType dtype, int batch, int time, int heads, int headDim, int capacity, int position)
    {
        float[] source = TestData.Uniform(batch * time * heads * headDim, seed: 1500 + position);
        float[] prior = TestData.Uniform(batch * capacity * heads * headDim, seed: 1600 + capacity, scale: 5f);
        using var dSource = DeviceBuffer.Upload(device, dtype, source);
        using var dCache = DeviceBuffer.Upload(device, dtype, prior);
        CacheKernels.CacheWrite(device, dtype, dSource.Pointer, dCache.Pointer, batch, time, heads, headDim, capacity, position);

        using var cpu = new CpuReference();
        using var cs = cpu.Stored(dtype, source, batch, time, heads, headDim);
        using var cc = cpu.Stored(dtype, prior, batch, capacity, heads, headDim);
        cpu.Backend.CacheWrite(cs, cc, position);
        return CheckResult.CompareBits("cache", dCache.Download(), cc.ToSingleArray());
    }
}
