using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Attention;

/// <summary>
/// Attention through a KV cache: kernels/attention.cu's cached_attention.
/// </summary>
internal static unsafe partial class AttentionKernels
{
    /// <summary><see cref="AttentionOp.Cached"/> on the CUDA backend, the contract checked: the key times are read on the device.</summary>
    internal static Tensor Cached(CudaBackend cuda, Tensor q, Tensor keyCache, Tensor valueCache, Tensor keyTimes, AttentionShape shape)
    {
        var (batch, queryTime, capacity, heads, headDim) = shape;
        var output = cuda.Allocate(q.Shape, q.DType, nameof(q));
        if (q.ElementCount > 0)
            CachedAttention(cuda.DeviceApi, q.DType, cuda.Pointer(q, nameof(q)), cuda.Pointer(keyCache, nameof(keyCache)), cuda.Pointer(valueCache, nameof(valueCache)),
                cuda.Pointer(keyTimes, nameof(keyTimes)), cuda.Pointer(output, "output"), batch, queryTime, capacity, heads, headDim, cuda.Stream);
        return output;
    }

    /// <summary>
    /// Launches attention.cu's cached_attention_{dtype} (contract in its header), always with per-row key times
    /// <paramref name="rowKeyTimes"/> (I32 [B], read on the device) over caches of <paramref name="capacity"/> rows per batch row;
    /// Tq = 0 launches nothing.
    /// </summary>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, or an output overlapping an input.</exception>
    /// <exception cref="ArgumentNullException">A null input or output.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A dimension out of range, or Tmax &lt; Tq.</exception>
    public static void CachedAttention(IDeviceApi device, DType dtype, DevicePtr q, DevicePtr keyCache, DevicePtr valueCache, DevicePtr rowKeyTimes,
        DevicePtr output, int batch, int queryTime, int capacity, int heads, int headDim, DeviceStream stream = default, DevicePtr logSumExp = default)
    {
        LaunchArguments.Pointer(rowKeyTimes, DType.I32, nameof(rowKeyTimes));
        if (capacity < queryTime)
            throw new ArgumentOutOfRangeException(nameof(capacity), capacity, $"capacity (Tmax) must be >= queryTime ({queryTime}): every row's key time is in [Tq, Tmax]");
        LaunchCached(device, dtype, q, keyCache, valueCache, rowKeyTimes, output, batch, queryTime, capacity, capacity, heads, headDim, stream, logSumExp);
    }

    private static void LaunchCached(IDeviceApi device, DType dtype, DevicePtr q, DevicePtr keyCache, DevicePtr valueCache, DevicePtr rowKeyTimes,
        DevicePtr output, int batch, int queryTime, int keyTime, int capacity, int heads, int headDim, DeviceStream stream, DevicePtr logSumExp)
    {
        LaunchArguments.Device(device);
        string kernel = KernelName.For("cached_attention", dtype, Supported);
        LaunchArguments.Pointer(q, dtype, nameof(q));
        LaunchArguments.Pointer(keyCache, dtype, nameof(keyCache));
        LaunchArguments.Pointer(valueCache, dtype, nameof(valueCache));
        LaunchArguments.Pointer(output, dtype, nameof(output));
        LaunchArguments.OptionalPointer(logSumExp, DType.F32, nameof(logSumExp));
        var dims = Dims.Check(batch, queryTime, keyTime, capacity, heads, headDim, dtype);
        long keyTimesBytes = (long)batch * sizeof(int); // read only when rowKeyTimes is not null (RequireApart skips null pointers)
        RequireApart(output, dims.QueryBytes, nameof(output), (q, dims.QueryBytes, nameof(q)), (keyCache, dims.KeyBytes, nameof(keyCache)),
            (valueCache, dims.KeyBytes, nameof(valueCache)), (rowKeyTimes, keyTimesBytes, nameof(rowKeyTimes)));
        RequireApart(logSumExp, dims.LseBytes, nameof(logSumExp), (q, dims.QueryBytes, nameof(q)), (keyCache, dims.KeyBytes, nameof(keyCache)),
            (valueCache, dims.KeyBytes, nameof(valueCache)), (rowKeyTimes, keyTimesBytes, nameof(rowKeyTimes)), (output, dims.QueryBytes, nameof(output)));
        if (dims.Empty) return;
        nint* args = stackalloc nint[]
        {
            (nint)(&q), (nint)(&keyCache), (nint)(&valueCache), (nint)(&rowKeyTimes), (nint)(&output), (nint)(&logSumExp), (nint)(&queryTime),
            (nint)(&keyTime), (nint)(&capacity), (nint)(&heads), (nint)(&headDim),
        };
        // Each row reads its own key time (device data): the declaration takes all keyTime rows, an upper bound.
        device.Launch(kernel, new Dim3((uint)dims.Pairs, (uint)Tiles(queryTime)), Threads, ForwardSharedBytes(headDim), stream,
            new ReadOnlySpan<nint>(args, 11), ForwardCost(dims, batch, queryTime, keyTime, heads, headDim, dtype, logSumExp, rowKeyTimes.IsNull ? 0 : batch, false));
    }
}
