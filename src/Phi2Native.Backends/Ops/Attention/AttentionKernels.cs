using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Attention;

/// <summary>
/// Launchers for kernels/attention.cu and kernels/attention_mma.cu (each kernel's contract is in its header), and
/// <see cref="AttentionOp"/> on the CUDA backend.
/// </summary>
internal static unsafe class AttentionKernels
{
    /// <summary><see cref="AttentionOp.Forward"/> on the CUDA backend, the contract checked; logSumExp is F32.</summary>
    internal static Tensor Forward(CudaBackend cuda, Tensor q, Tensor k, Tensor v, AttentionShape shape, out Tensor logSumExp)
    {
        var (batch, queryTime, keyTime, heads, headDim) = shape;
        var output = cuda.Allocate(q.Shape, q.DType, nameof(q));
        logSumExp = cuda.Allocate([batch, heads, queryTime], DType.F32, nameof(logSumExp));
        if (q.ElementCount > 0)
            Attention(cuda.DeviceApi, q.DType, cuda.Pointer(q, nameof(q)), cuda.Pointer(k, nameof(k)), cuda.Pointer(v, nameof(v)),
                cuda.Pointer(output, "output"), cuda.Pointer(logSumExp, nameof(logSumExp)), batch, queryTime, keyTime, heads, headDim, cuda.Stream);
        return output;
    }

    /// <summary><see cref="AttentionOp"/>'s backward on the CUDA backend, the contract checked.</summary>
    internal static void Backward(CudaBackend cuda, Tensor dOutput, Tensor q, Tensor k, Tensor v, Tensor output, Tensor logSumExp,
        Tensor? dq, Tensor? dk, Tensor? dv, AttentionShape shape)
    {
        var (batch, queryTime, keyTime, heads, headDim) = shape;
        var (device, stream) = (cuda.DeviceApi, cuda.Stream);
        var (pdk, pdv) = (cuda.OptionalPointer(dk, nameof(dk)), cuda.OptionalPointer(dv, nameof(dv)));
        if (q.ElementCount == 0)
        {
            // No query attends to anything: the keys and values get no gradient.
            foreach (var (tensor, pointer) in new[] { (dk, pdk), (dv, pdv) })
                if (tensor is { ElementCount: > 0 }) device.Fill(pointer, 0, tensor.ElementCount * tensor.DType.SizeInBytes(), stream);
            return;
        }
        using var delta = dq != null || dk != null ? cuda.Allocate([batch, heads, queryTime], DType.F32, "delta") : null;
        AttentionBackward(device, q.DType, cuda.Pointer(dOutput, nameof(dOutput)), cuda.Pointer(q, nameof(q)), cuda.Pointer(k, nameof(k)),
            cuda.Pointer(v, nameof(v)), cuda.Pointer(output, nameof(output)), cuda.Pointer(logSumExp, nameof(logSumExp)),
            delta is null ? DevicePtr.Null : cuda.Pointer(delta, "delta"), cuda.OptionalPointer(dq, nameof(dq)), pdk, pdv,
            batch, queryTime, keyTime, heads, headDim, stream);
    }

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

    /// <summary>The largest head dim the kernels take (their per-thread accumulators: PHI2_ATTENTION_MAX_D).</summary>
    public const int MaxHeadDim = 128;

    /// <summary>Queries or keys per tile (PHI2_ATTENTION_TILE).</summary>
    public const int Tile = 32;

    /// <summary>Threads per block of the forward and backward kernels: 32 tile rows x 4 lanes (PHI2_ATTENTION_THREADS).</summary>
    public const uint Threads = 128;

    /// <summary>Threads per block of the delta kernel: 8 warps, one row each.</summary>
    public const uint DeltaThreads = 256;

    private static readonly DType[] Supported = [DType.F32, DType.BF16];

    private static readonly DType[] TensorCoreSupported = [DType.BF16, DType.F16];

    /// <summary>Queries per block, and keys per tile, of attention_mma.cu's forward (PHI2_ATTENTION_MMA_ROWS, _KEYS).</summary>
    public const int TensorCoreTile = 64;

    /// <summary>
    /// The one place the forward's kernel is chosen: attention_mma_{dtype} (tensor cores) for a 16-bit dtype, D a multiple of
    /// 16 up to <see cref="MaxHeadDim"/> and q, k, v 16-byte aligned (its cp.async copies); otherwise attention_{dtype} (SIMT).
    /// </summary>
    public static bool UsesTensorCores(DType dtype, int headDim, DevicePtr q, DevicePtr k, DevicePtr v) =>
        dtype is DType.BF16 or DType.F16 && headDim is >= 16 and <= MaxHeadDim && headDim % 16 == 0 &&
        (q.Address | k.Address | v.Address) % 16 == 0;

    /// <summary>Dynamic shared memory of an attention_mma block, by attention_mma.cu's formula (above 48 KiB the device opts the kernel in).</summary>
    public static int TensorCoreForwardSharedBytes(int headDim) => 5 * TensorCoreTile * (headDim + 8) * sizeof(ushort);

    /// <summary>Dynamic shared memory of a forward block, by attention.cu's formula (above 48 KiB the device opts the kernel in).</summary>
    public static int ForwardSharedBytes(int headDim) => (3 * Tile * (headDim | 1) + Tile * (Tile + 1)) * sizeof(float);

    /// <summary>Dynamic shared memory of a backward block, by attention.cu's formula.</summary>
    public static int BackwardSharedBytes(int headDim) =>
        (4 * Tile * (headDim | 1) + 2 * Tile * (Tile + 1) + 2 * Tile) * sizeof(float);

    /// <summary>Tiles of <see cref="Tile"/> rows covering <paramref name="rows"/>.</summary>
    public static int Tiles(int rows) => (int)(((long)rows + Tile - 1) / Tile);

    /// <summary>
    /// Launches attention_mma.cu's attention_mma_{dtype} where <see cref="UsesTensorCores"/> says so, else attention.cu's
    /// attention_{dtype} (one contract, in attention.cu's header); B = 0 or Tq = 0 launches nothing.
    /// </summary>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, or an output overlapping an input.</exception>
    /// <exception cref="ArgumentNullException">A null input or output.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A dimension out of range, or Tk &lt; Tq.</exception>
    public static void Attention(IDeviceApi device, DType dtype, DevicePtr q, DevicePtr k, DevicePtr v, DevicePtr output, DevicePtr logSumExp,
        int batch, int queryTime, int keyTime, int heads, int headDim, DeviceStream stream = default)
    {
        LaunchArguments.Device(device);
        bool tensorCores = UsesTensorCores(dtype, headDim, q, k, v);
        string kernel = tensorCores ? KernelName.For("attention_mma", dtype, TensorCoreSupported) : KernelName.For("attention", dtype, Supported);
        LaunchArguments.Pointer(q, dtype, nameof(q));
        LaunchArguments.Pointer(k, dtype, nameof(k));
        LaunchArguments.Pointer(v, dtype, nameof(v));
        LaunchArguments.Pointer(output, dtype, nameof(output));
        LaunchArguments.OptionalPointer(logSumExp, DType.F32, nameof(logSumExp));
        var dims = Dims.Check(batch, queryTime, keyTime, keyTime, heads, headDim, dtype);
        RequireApart(output, dims.QueryBytes, nameof(output), (q, dims.QueryBytes, nameof(q)), (k, dims.KeyBytes, nameof(k)), (v, dims.KeyBytes, nameof(v)));
        RequireApart(logSumExp, dims.LseBytes, nameof(logSumExp), (q, dims.QueryBytes, nameof(q)), (k, dims.KeyBytes, nameof(k)),
            (v, dims.KeyBytes, nameof(v)), (output, dims.QueryBytes, nameof(output)));
        if (dims.Empty) return;
        nint* args = stackalloc nint[]
        {
            (nint)(&q), (nint)(&k), (nint)(&v), (nint)(&output), (nint)(&logSumExp), (nint)(&queryTime), (nint)(&keyTime), (nint)(&heads),
            (nint)(&headDim),
        };
        var cost = ForwardCost(dims, batch, queryTime, keyTime, heads, headDim, dtype, logSumExp, 0, tensorCores);
        if (tensorCores)
            device.Launch(kernel, new Dim3((uint)dims.Pairs, (uint)((queryTime + TensorCoreTile - 1) / TensorCoreTile)), Threads,
                TensorCoreForwardSharedBytes(headDim), stream, new ReadOnlySpan<nint>(args, 9), cost);
        else
            device.Launch(kernel, new Dim3((uint)dims.Pairs, (uint)Tiles(queryTime)), Threads, ForwardSharedBytes(headDim), stream,
                new ReadOnlySpan<nint>(args, 9), cost);
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

    /// <summary>
    /// Launches attention.cu's attention_backward_delta_{dtype} into <paramref name="delta"/> (when dq or dk is wanted), then
    /// attention_backward_{dtype} (contracts in its header); all gradients null launches nothing.
    /// </summary>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, or an output overlapping an input or another output.</exception>
    /// <exception cref="ArgumentNullException">A null input, or a null delta when dq or dk is wanted.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A dimension out of range, or Tk &lt; Tq.</exception>
    public static void AttentionBackward(IDeviceApi device, DType dtype, DevicePtr dOutput, DevicePtr q, DevicePtr k, DevicePtr v,
        DevicePtr output, DevicePtr logSumExp, DevicePtr delta, DevicePtr dq, DevicePtr dk, DevicePtr dv, int batch, int queryTime,
        int keyTime, int heads, int headDim, DeviceStream stream = default)
    {
        LaunchArguments.Device(device);
        string kernel = KernelName.For("attention_backward", dtype, Supported);
        string deltaKernel = KernelName.For("attention_backward_delta", dtype, Supported);
        LaunchArguments.Pointer(dOutput, dtype, nameof(dOutput));
        LaunchArguments.Pointer(q, dtype, nameof(q));
        LaunchArguments.Pointer(k, dtype, nameof(k));
        LaunchArguments.Pointer(v, dtype, nameof(v));
        LaunchArguments.Pointer(output, dtype, nameof(output));
        LaunchArguments.Pointer(logSumExp, DType.F32, nameof(logSumExp));
        bool wantDq = LaunchArguments.OptionalPointer(dq, dtype, nameof(dq));
        bool wantDk = LaunchArguments.OptionalPointer(dk, dtype, nameof(dk));
        bool wantDv = LaunchArguments.OptionalPointer(dv, dtype, nameof(dv));
        bool wantDelta = wantDq || wantDk;
        if (wantDelta) LaunchArguments.Pointer(delta, DType.F32, nameof(delta));
        else LaunchArguments.OptionalPointer(delta, DType.F32, nameof(delta));
        var dims = Dims.Check(batch, queryTime, keyTime, keyTime, heads, headDim, dtype);

        var inputs = new (DevicePtr, long, string)[]
        {
            (dOutput, dims.QueryBytes, nameof(dOutput)), (q, dims.QueryBytes, nameof(q)), (k, dims.KeyBytes, nameof(k)), (v, dims.KeyBytes, nameof(v)),
            (output, dims.QueryBytes, nameof(output)), (logSumExp, dims.LseBytes, nameof(logSumExp)),
        };
        RequireApart(delta, wantDelta ? dims.LseBytes : 0, nameof(delta), inputs);
        RequireApart(dq, dims.QueryBytes, nameof(dq), [.. inputs, (delta, wantDelta ? dims.LseBytes : 0, nameof(delta))]);
        RequireApart(dk, dims.KeyBytes, nameof(dk), [.. inputs, (delta, wantDelta ? dims.LseBytes : 0, nameof(delta)), (dq, dims.QueryBytes, nameof(dq))]);
        RequireApart(dv, dims.KeyBytes, nameof(dv),
            [.. inputs, (delta, wantDelta ? dims.LseBytes : 0, nameof(delta)), (dq, dims.QueryBytes, nameof(dq)), (dk, dims.KeyBytes, nameof(dk))]);

        int keyTiles = wantDk || wantDv ? Tiles(keyTime) : 0, queryTiles = wantDq ? Tiles(queryTime) : 0;
        if (dims.Pairs == 0 || keyTiles + queryTiles == 0) return;
        if (wantDelta && queryTime > 0)
        {
            int rows = (int)dims.QueryRows;
            nint* deltaArgs = stackalloc nint[]
            {
                (nint)(&dOutput), (nint)(&output), (nint)(&delta), (nint)(&rows), (nint)(&queryTime), (nint)(&heads), (nint)(&headDim),
            };
            // dO and O read, delta (fp32 [B, H, Tq]) written; 2 flops an element.
            device.Launch(deltaKernel, LaunchShape.Linear(dims.QueryRows * 32, DeltaThreads), DeltaThreads, 0, stream, new ReadOnlySpan<nint>(deltaArgs, 7),
                new KernelCost(2 * dims.QueryBytes, dims.LseBytes, 0, 2 * dims.QueryBytes / dtype.SizeInBytes()));
        }
        nint* args = stackalloc nint[]
        {
            (nint)(&dOutput), (nint)(&q), (nint)(&k), (nint)(&v), (nint)(&logSumExp), (nint)(&delta), (nint)(&dq), (nint)(&dk), (nint)(&dv),
            (nint)(&queryTime), (nint)(&keyTime), (nint)(&heads), (nint)(&headDim),
        };
        // dO, q, k, v, lse and delta read; dq, dk, dv written as wanted. Key-tile blocks recompute s and dp and form dv and
        // dk (8 D flops a visible pair), query-tile blocks recompute s and dp and form dq (6 D).
        long pairs = CausalPairs(batch, queryTime, keyTime, heads);
        long backwardFlops = pairs * headDim * ((keyTiles > 0 ? 8 : 0) + (queryTiles > 0 ? 6 : 0)) + pairs * 6;
        device.Launch(kernel, new Dim3((uint)dims.Pairs, (uint)(keyTiles + queryTiles)), Threads, BackwardSharedBytes(headDim), stream,
            new ReadOnlySpan<nint>(args, 13),
            new KernelCost(2 * dims.QueryBytes + 2 * dims.KeyBytes + (wantDelta ? 2 : 1) * dims.LseBytes,
                (wantDq ? dims.QueryBytes : 0) + (wantDk ? dims.KeyBytes : 0) + (wantDv ? dims.KeyBytes : 0), 0, backwardFlops));
    }

    // Query i (of Tq) sees the keys up to keyTime - Tq + i: Tq (keyTime - Tq) + Tq (Tq + 1) / 2 pairs per batch row and head.
    private static long CausalPairs(int batch, int queryTime, int keyTime, int heads) =>
        (long)batch * heads * ((long)queryTime * (keyTime - queryTime) + (long)queryTime * (queryTime + 1) / 2);

    // q and the keyTime rows of k and v read (and the row key times), output and lse written; 4 D flops a visible pair
    // (q.k and p.v: on tensor cores in attention_mma, whose SASS has them per resources.tsv) and ~6 SIMT for the online softmax.
    private static KernelCost ForwardCost(Dims dims, int batch, int queryTime, int keyTime, int heads, int headDim, DType dtype, DevicePtr logSumExp,
        int keyTimes, bool tensorCores)
    {
        long pairs = CausalPairs(batch, queryTime, keyTime, heads);
        long keyBytes = (long)batch * keyTime * heads * headDim * dtype.SizeInBytes();
        long products = pairs * 4L * headDim, softmax = pairs * 6;
        return new KernelCost(dims.QueryBytes + 2 * keyBytes + (long)keyTimes * sizeof(int), dims.QueryBytes + (logSumExp.IsNull ? 0 : dims.LseBytes),
            tensorCores ? products : 0, tensorCores ? softmax : products + softmax);
    }

    /// <summary>Refuses an output (when not null) that overlaps any of <paramref name="others"/> (null ones skipped).</summary>
    private static void RequireApart(DevicePtr output, long outputBytes, string outputName, params ReadOnlySpan<(DevicePtr Pointer, long Bytes, string Name)> others)
    {
        if (output.IsNull) return;
        foreach (var other in others)
            if (!other.Pointer.IsNull) BufferOverlap.RequireNone(other.Pointer, other.Bytes, output, outputBytes, other.Name, outputName);
    }

    /// <summary>The checked dimensions of one call and the byte sizes of its tensors.</summary>
    private readonly record struct Dims(long Pairs, long QueryRows, long QueryBytes, long KeyBytes, long LseBytes)
    {
        public bool Empty => Pairs == 0 || QueryRows == 0;

        public static Dims Check(int batch, int queryTime, int keyTime, int capacity, int heads, int headDim, DType dtype)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(batch);
            ArgumentOutOfRangeException.ThrowIfNegative(queryTime);
            ArgumentOutOfRangeException.ThrowIfNegativeOrZero(heads);
            if (headDim < 1 || headDim > MaxHeadDim)
                throw new ArgumentOutOfRangeException(nameof(headDim), headDim, $"headDim must be in 1..{MaxHeadDim}");
            if (keyTime < queryTime)
                throw new ArgumentOutOfRangeException(nameof(keyTime), keyTime, $"keyTime must be >= queryTime ({queryTime}): query i sits at position keyTime - queryTime + i");
            if (capacity < keyTime)
                throw new ArgumentOutOfRangeException(nameof(capacity), capacity, $"capacity (Tmax) must be >= keyTime ({keyTime})");
            long pairs = (long)batch * heads, queryRows = pairs * queryTime;
            // Grid x is the (batch, head) pair, y the tiles (at most 65535); the delta kernel counts rows in an int.
            if (queryRows > int.MaxValue || (long)Tiles(capacity) + Tiles(queryTime) > ushort.MaxValue)
                throw new ArgumentOutOfRangeException(nameof(batch), "B * Tq * H must fit in an int, and Tq and Tk in 65535 tiles of 32 together");
            int size = dtype.SizeInBytes();
            return new Dims(pairs, queryRows, queryRows * headDim * size, pairs * capacity * headDim * size, queryRows * sizeof(float));
        }
    }
}
