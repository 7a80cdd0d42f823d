using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.KvCache;

/// <summary>
/// Launchers for kernels/cache.cu: the KV-cache write of generation (<see cref="KvCacheOp"/>), source [B, T, H, D] into
/// each batch row's rows [p, p + T) of cache [B, Tmax, H, D], an exact move of the stored bits (F32 or BF16).
/// </summary>
public static unsafe class CacheKernels
{
    /// <summary>Threads per block (one element per thread).</summary>
    public const uint BlockSize = 256;

    private static readonly DType[] Supported = [DType.F32, DType.BF16];

    /// <summary>
    /// Copies source [B, T, H, D] into rows [p, p + T) of cache [B, Tmax, H, D], p = rowPositions[b] for batch row b; the
    /// other rows are untouched. The positions stay on the device: a row whose p is outside [0, Tmax - T] (the CPU
    /// backend throws for it; the kernel cannot) is skipped, its cache rows untouched.
    /// Launch: grid ((B * T * H * D + 255) / 256), block (256), no dynamic shared memory.
    /// </summary>
    /// <param name="device">The device.</param>
    /// <param name="dtype">F32 or BF16: source and cache.</param>
    /// <param name="source">[B, T, H, D] keys or values of this step.</param>
    /// <param name="cache">[B, Tmax, H, D] the cache; must not overlap source or rowPositions.</param>
    /// <param name="rowPositions">I32 [B] device memory: each batch row's first row written.</param>
    /// <param name="batch">B.</param>
    /// <param name="time">T; 0 (or B = 0) launches nothing.</param>
    /// <param name="heads">H, at least 1.</param>
    /// <param name="headDim">D, at least 1.</param>
    /// <param name="capacity">Tmax, the cache's rows per batch, at least T.</param>
    /// <param name="stream">The stream.</param>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, or cache overlapping source or rowPositions.</exception>
    /// <exception cref="ArgumentNullException">A null pointer.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A negative size, or T &gt; Tmax.</exception>
    public static void CacheWrite(IDeviceApi device, DType dtype, DevicePtr source, DevicePtr cache, DevicePtr rowPositions, int batch, int time,
        int heads, int headDim, int capacity, DeviceStream stream = default)
    {
        LaunchArguments.Device(device);
        string kernel = KernelName.For("cache_write", dtype, Supported);
        LaunchArguments.Pointer(source, dtype, nameof(source));
        LaunchArguments.Pointer(cache, dtype, nameof(cache));
        LaunchArguments.Pointer(rowPositions, DType.I32, nameof(rowPositions));
        ArgumentOutOfRangeException.ThrowIfNegative(batch);
        ArgumentOutOfRangeException.ThrowIfNegative(time);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(heads);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(headDim);
        ArgumentOutOfRangeException.ThrowIfNegative(capacity);
        if (time > capacity)
            throw new ArgumentOutOfRangeException(nameof(capacity), capacity, $"capacity (Tmax) must be >= time ({time})");
        long rowElements = (long)heads * headDim;
        long elements = (long)batch * time * rowElements;
        if (rowElements > int.MaxValue) throw new ArgumentOutOfRangeException(nameof(headDim), headDim, "H * D must fit in an int");
        int size = dtype.SizeInBytes();
        long cacheBytes = (long)batch * capacity * rowElements * size;
        BufferOverlap.RequireNone(source, elements * size, cache, cacheBytes, nameof(source), nameof(cache));
        BufferOverlap.RequireNone(rowPositions, (long)batch * sizeof(int), cache, cacheBytes, nameof(rowPositions), nameof(cache));
        if (elements == 0) return;
        int row = (int)rowElements;
        nint* args = stackalloc nint[]
        {
            (nint)(&source), (nint)(&cache), (nint)(&rowPositions), (nint)(&batch), (nint)(&time), (nint)(&capacity), (nint)(&row),
        };
        // Each thread reads its batch row's position: B ints once.
        device.Launch(kernel, LaunchShape.Linear(elements, BlockSize), BlockSize, 0, stream, new ReadOnlySpan<nint>(args, 7),
            new KernelCost(elements * size + (long)batch * sizeof(int), elements * size, 0, 0));
    }
}
