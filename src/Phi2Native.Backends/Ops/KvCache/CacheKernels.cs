using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.KvCache;

/// <summary>Launchers for kernels/cache.cu (its contract is in its header), and <see cref="KvCacheOp"/> on the CUDA backend.</summary>
internal static unsafe class CacheKernels
{
    /// <summary>Threads per block (one element per thread).</summary>
    public const uint BlockSize = 256;

    private static readonly DType[] Supported = [DType.F32, DType.BF16];

    /// <summary>Launches cache.cu's cache_write_{dtype} (contract in its header) into a cache of <paramref name="capacity"/> rows per batch row; B = 0 or T = 0 launches nothing.</summary>
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
