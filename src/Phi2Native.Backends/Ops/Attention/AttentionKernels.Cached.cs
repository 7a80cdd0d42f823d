using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Attention;

/// <summary>
/// Attention through a KV cache: split-K decoding (kernels/attention_decode.cu), attention_mma.cu's cached_attention_mma or
/// attention.cu's cached_attention, as <see cref="Choose"/> picks.
/// </summary>
internal static unsafe partial class AttentionKernels
{
    /// <summary>
    /// <see cref="AttentionOp.Cached"/> on the CUDA backend, the contract checked: the key times are read on the device; a
    /// split-K decode's partials come from the caching allocator for the call, its counters are the backend's
    /// (<see cref="CudaBackend.ZeroedCounters"/>: zero before and after every launch, so kept, not allocated per call, and a
    /// captured graph's replays use the same ones).
    /// </summary>
    internal static Tensor Cached(CudaBackend cuda, Tensor q, Tensor keyCache, Tensor valueCache, Tensor keyTimes, AttentionShape shape)
    {
        var (batch, queryTime, capacity, heads, headDim) = shape;
        var output = cuda.Allocate(q.Shape, q.DType, nameof(q));
        if (q.ElementCount > 0)
        {
            var (pq, pk, pv) = (cuda.Pointer(q, nameof(q)), cuda.Pointer(keyCache, nameof(keyCache)), cuda.Pointer(valueCache, nameof(valueCache)));
            var choice = Choose(q.DType, queryTime, capacity, headDim, cached: true, pq, pk, pv);
            long partialsBytes = DecodePartialsBytes(choice, batch, queryTime, heads, headDim);
            using var partials = partialsBytes > 0 ? cuda.Allocate([checked((int)(partialsBytes / sizeof(float)))], DType.F32, "partials") : null;
            var counters = partialsBytes > 0 ? cuda.ZeroedCounters(DecodeCountersBytes(choice, batch, heads) / sizeof(int)) : DevicePtr.Null;
            CachedAttention(cuda.DeviceApi, q.DType, pq, pk, pv, cuda.Pointer(keyTimes, nameof(keyTimes)), cuda.Pointer(output, "output"), batch, queryTime,
                capacity, heads, headDim, cuda.Stream, partials: partials is null ? DevicePtr.Null : cuda.Pointer(partials, "partials"), counters: counters);
        }
        return output;
    }

    /// <summary>
    /// Launches the cached forward <see cref="Choose"/> picks (contracts in attention.cu's and attention_decode.cu's headers), always
    /// with per-row key times <paramref name="rowKeyTimes"/> (I32 [B], read on the device) over caches of <paramref name="capacity"/>
    /// rows per batch row: attention_decode_{dtype}_d{bound} with <paramref name="partials"/> (fp32, <see cref="DecodePartialsBytes"/>)
    /// and <paramref name="counters"/> (I32, <see cref="DecodeCountersBytes"/>: zero, and left zero), needed only then; or
    /// cached_attention_mma_{dtype}_d{bound} or cached_attention_{dtype}. One launch, whose grid depends on B, Tq, H and Tmax only.
    /// Tq = 0 launches nothing.
    /// </summary>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, or an output overlapping an input.</exception>
    /// <exception cref="ArgumentNullException">A null input or output, or null partials or counters for a split-K decode.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A dimension out of range, or Tmax &lt; Tq.</exception>
    public static void CachedAttention(IDeviceApi device, DType dtype, DevicePtr q, DevicePtr keyCache, DevicePtr valueCache, DevicePtr rowKeyTimes,
        DevicePtr output, int batch, int queryTime, int capacity, int heads, int headDim, DeviceStream stream = default, DevicePtr logSumExp = default,
        DevicePtr partials = default, DevicePtr counters = default)
    {
        LaunchArguments.Device(device);
        LaunchArguments.Pointer(rowKeyTimes, DType.I32, nameof(rowKeyTimes));
        if (capacity < queryTime)
            throw new ArgumentOutOfRangeException(nameof(capacity), capacity, $"capacity (Tmax) must be >= queryTime ({queryTime}): every row's key time is in [Tq, Tmax]");
        var choice = Choose(dtype, queryTime, capacity, headDim, cached: true, q, keyCache, valueCache);
        KernelName.For(choice.Kind == AttentionKernel.Simt ? "cached_attention" : "cached_attention_mma", dtype, choice.Kind == AttentionKernel.Simt ? Supported : TensorCoreSupported);
        LaunchArguments.Pointer(q, dtype, nameof(q));
        LaunchArguments.Pointer(keyCache, dtype, nameof(keyCache));
        LaunchArguments.Pointer(valueCache, dtype, nameof(valueCache));
        LaunchArguments.Pointer(output, dtype, nameof(output));
        LaunchArguments.OptionalPointer(logSumExp, DType.F32, nameof(logSumExp));
        var dims = Dims.Check(batch, queryTime, capacity, capacity, heads, headDim, dtype);
        long keyTimesBytes = (long)batch * sizeof(int);
        long partialsBytes = DecodePartialsBytes(choice, batch, queryTime, heads, headDim);
        long countersBytes = DecodeCountersBytes(choice, batch, heads);
        RequireApart(output, dims.QueryBytes, nameof(output), (q, dims.QueryBytes, nameof(q)), (keyCache, dims.KeyBytes, nameof(keyCache)),
            (valueCache, dims.KeyBytes, nameof(valueCache)), (rowKeyTimes, keyTimesBytes, nameof(rowKeyTimes)));
        RequireApart(logSumExp, dims.LseBytes, nameof(logSumExp), (q, dims.QueryBytes, nameof(q)), (keyCache, dims.KeyBytes, nameof(keyCache)),
            (valueCache, dims.KeyBytes, nameof(valueCache)), (rowKeyTimes, keyTimesBytes, nameof(rowKeyTimes)), (output, dims.QueryBytes, nameof(output)));
        if (partialsBytes > 0)
        {
            LaunchArguments.Pointer(partials, DType.F32, nameof(partials));
            RequireApart(partials, partialsBytes, nameof(partials), (q, dims.QueryBytes, nameof(q)), (keyCache, dims.KeyBytes, nameof(keyCache)),
                (valueCache, dims.KeyBytes, nameof(valueCache)), (rowKeyTimes, keyTimesBytes, nameof(rowKeyTimes)), (output, dims.QueryBytes, nameof(output)),
                (logSumExp, dims.LseBytes, nameof(logSumExp)));
            LaunchArguments.Pointer(counters, DType.I32, nameof(counters));
            RequireApart(counters, countersBytes, nameof(counters), (q, dims.QueryBytes, nameof(q)), (keyCache, dims.KeyBytes, nameof(keyCache)),
                (valueCache, dims.KeyBytes, nameof(valueCache)), (rowKeyTimes, keyTimesBytes, nameof(rowKeyTimes)), (output, dims.QueryBytes, nameof(output)),
                (logSumExp, dims.LseBytes, nameof(logSumExp)), (partials, partialsBytes, nameof(partials)));
        }
        if (dims.Empty) return;
        if (choice.Kind == AttentionKernel.SplitKDecode)
        {
            LaunchDecode(device, dtype, choice, q, keyCache, valueCache, rowKeyTimes, output, logSumExp, partials, counters, dims, batch, queryTime, capacity, heads,
                headDim, stream);
            return;
        }
        int keyTime = capacity; // ignored by the kernels: rowKeyTimes is never null here
        nint* args = stackalloc nint[]
        {
            (nint)(&q), (nint)(&keyCache), (nint)(&valueCache), (nint)(&rowKeyTimes), (nint)(&output), (nint)(&logSumExp), (nint)(&queryTime),
            (nint)(&keyTime), (nint)(&capacity), (nint)(&heads), (nint)(&headDim),
        };
        // Each row reads its own key time (device data): the declaration takes all Tmax rows, an upper bound.
        bool tensorCores = choice.Kind == AttentionKernel.TensorCore;
        var cost = ForwardCost(dims, batch, queryTime, capacity, heads, headDim, dtype, logSumExp, batch, tensorCores);
        if (tensorCores)
            device.Launch(choice.Kernel(dtype, cached: true), new Dim3((uint)dims.Pairs, (uint)((queryTime + TensorCoreTile - 1) / TensorCoreTile)), Threads,
                TensorCoreForwardSharedBytes(headDim), stream, new ReadOnlySpan<nint>(args, 11), cost);
        else
            device.Launch(choice.Kernel(dtype, cached: true), new Dim3((uint)dims.Pairs, (uint)Tiles(queryTime)), Threads, ForwardSharedBytes(headDim), stream,
                new ReadOnlySpan<nint>(args, 11), cost);
    }

    // attention_decode_{dtype}_d{bound}: a grid of (B * H, splits); the last chunk of each (b, h) combines.
    private static void LaunchDecode(IDeviceApi device, DType dtype, AttentionChoice choice, DevicePtr q, DevicePtr keyCache, DevicePtr valueCache,
        DevicePtr rowKeyTimes, DevicePtr output, DevicePtr logSumExp, DevicePtr partials, DevicePtr counters, Dims dims, int batch, int queryTime,
        int capacity, int heads, int headDim, DeviceStream stream)
    {
        long partialsBytes = DecodePartialsBytes(choice, batch, queryTime, heads, headDim);
        long countersBytes = DecodeCountersBytes(choice, batch, heads);
        long keyTimesBytes = (long)batch * sizeof(int);
        // Upper bounds (the key times are device data): every chunk of every row runs, all Tmax rows of K and V are read, and
        // the combining blocks read back every chunk's partials.
        long pairs = dims.QueryRows * capacity;
        long keyBytes = (long)batch * capacity * heads * headDim * dtype.SizeInBytes();
        long combineFlops = dims.QueryRows * choice.Splits * (3L * headDim + 4);
        var cost = new KernelCost(dims.QueryBytes + 2 * keyBytes + keyTimesBytes + partialsBytes + countersBytes,
            partialsBytes + dims.QueryBytes + (logSumExp.IsNull ? 0 : dims.LseBytes) + countersBytes, pairs * 4L * headDim, pairs * 6 + combineFlops);
        nint* args = stackalloc nint[]
        {
            (nint)(&q), (nint)(&keyCache), (nint)(&valueCache), (nint)(&rowKeyTimes), (nint)(&partials), (nint)(&counters), (nint)(&output),
            (nint)(&logSumExp), (nint)(&queryTime), (nint)(&capacity), (nint)(&heads), (nint)(&headDim),
        };
        device.Launch(choice.Kernel(dtype, cached: true), new Dim3((uint)dims.Pairs, (uint)choice.Splits), DecodeThreads, DecodeSharedBytes(headDim), stream,
            new ReadOnlySpan<nint>(args, 12), cost);
    }
}
