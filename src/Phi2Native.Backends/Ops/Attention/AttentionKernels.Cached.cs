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
    /// split-K decode's partials come from the caching allocator for the call.
    /// </summary>
    internal static Tensor Cached(CudaBackend cuda, Tensor q, Tensor keyCache, Tensor valueCache, Tensor keyTimes, AttentionShape shape)
    {
        var (batch, queryTime, capacity, heads, headDim) = shape;
        var output = cuda.Allocate(q.Shape, q.DType, nameof(q));
        if (q.ElementCount > 0)
        {
            var (pq, pk, pv) = (cuda.Pointer(q, nameof(q)), cuda.Pointer(keyCache, nameof(keyCache)), cuda.Pointer(valueCache, nameof(valueCache)));
            long partialsBytes = DecodePartialsBytes(Choose(q.DType, queryTime, capacity, headDim, cached: true, pq, pk, pv), batch, queryTime, heads, headDim);
            using var partials = partialsBytes > 0 ? cuda.Allocate([checked((int)(partialsBytes / sizeof(float)))], DType.F32, "partials") : null;
            CachedAttention(cuda.DeviceApi, q.DType, pq, pk, pv, cuda.Pointer(keyTimes, nameof(keyTimes)), cuda.Pointer(output, "output"), batch, queryTime,
                capacity, heads, headDim, cuda.Stream, partials: partials is null ? DevicePtr.Null : cuda.Pointer(partials, "partials"));
        }
        return output;
    }

    /// <summary>
    /// Launches the cached forward <see cref="Choose"/> picks (contracts in attention.cu's and attention_decode.cu's headers), always
    /// with per-row key times <paramref name="rowKeyTimes"/> (I32 [B], read on the device) over caches of <paramref name="capacity"/>
    /// rows per batch row: attention_decode_{dtype}_d{bound} into <paramref name="partials"/> (fp32, <see cref="DecodePartialsBytes"/>;
    /// needed only then) and attention_decode_combine_{dtype}, or one cached_attention_mma_{dtype}_d{bound} or cached_attention_{dtype}.
    /// Every launch's grid depends on B, Tq, H and Tmax only. Tq = 0 launches nothing.
    /// </summary>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, or an output overlapping an input.</exception>
    /// <exception cref="ArgumentNullException">A null input or output, or null partials for a split-K decode.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A dimension out of range, or Tmax &lt; Tq.</exception>
    public static void CachedAttention(IDeviceApi device, DType dtype, DevicePtr q, DevicePtr keyCache, DevicePtr valueCache, DevicePtr rowKeyTimes,
        DevicePtr output, int batch, int queryTime, int capacity, int heads, int headDim, DeviceStream stream = default, DevicePtr logSumExp = default,
        DevicePtr partials = default)
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
        }
        if (dims.Empty) return;
        if (choice.Kind == AttentionKernel.SplitKDecode)
        {
            LaunchDecode(device, dtype, choice, q, keyCache, valueCache, rowKeyTimes, output, logSumExp, partials, dims, batch, queryTime, capacity, heads, headDim, stream);
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

    // attention_decode_{dtype}_d{bound} then attention_decode_combine_{dtype}: grids of (B * H, splits) and (B * Tq * H / 4).
    private static void LaunchDecode(IDeviceApi device, DType dtype, AttentionChoice choice, DevicePtr q, DevicePtr keyCache, DevicePtr valueCache,
        DevicePtr rowKeyTimes, DevicePtr output, DevicePtr logSumExp, DevicePtr partials, Dims dims, int batch, int queryTime, int capacity, int heads,
        int headDim, DeviceStream stream)
    {
        long partialsBytes = DecodePartialsBytes(choice, batch, queryTime, heads, headDim);
        long keyTimesBytes = (long)batch * sizeof(int);
        // Upper bounds (the key times are device data): every chunk of every row runs, all Tmax rows of K and V are read.
        long pairs = dims.QueryRows * capacity;
        long keyBytes = (long)batch * capacity * heads * headDim * dtype.SizeInBytes();
        var decodeCost = new KernelCost(dims.QueryBytes + 2 * keyBytes + keyTimesBytes, partialsBytes, pairs * 4L * headDim, pairs * 6);
        nint* args = stackalloc nint[]
        {
            (nint)(&q), (nint)(&keyCache), (nint)(&valueCache), (nint)(&rowKeyTimes), (nint)(&partials), (nint)(&queryTime), (nint)(&capacity),
            (nint)(&heads), (nint)(&headDim),
        };
        device.Launch(choice.Kernel(dtype, cached: true), new Dim3((uint)dims.Pairs, (uint)choice.Splits), DecodeThreads, DecodeSharedBytes(headDim), stream,
            new ReadOnlySpan<nint>(args, 9), decodeCost);

        var combineCost = new KernelCost(partialsBytes + keyTimesBytes, dims.QueryBytes + (logSumExp.IsNull ? 0 : dims.LseBytes), 0,
            dims.QueryRows * choice.Splits * (3L * headDim + 4));
        nint* combineArgs = stackalloc nint[]
        {
            (nint)(&partials), (nint)(&rowKeyTimes), (nint)(&output), (nint)(&logSumExp), (nint)(&batch), (nint)(&queryTime), (nint)(&capacity),
            (nint)(&heads), (nint)(&headDim),
        };
        uint warpsPerBlock = DecodeCombineThreads / 32;
        device.Launch("attention_decode_combine_" + KernelName.Suffix(dtype), new Dim3((uint)((dims.QueryRows + warpsPerBlock - 1) / warpsPerBlock)),
            DecodeCombineThreads, 0, stream, new ReadOnlySpan<nint>(combineArgs, 9), combineCost);
    }
}
