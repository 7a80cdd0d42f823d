using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Attention;

/// <summary>
/// Launchers for kernels/attention.cu, kernels/attention_mma.cu, kernels/attention_mma_backward.cu and
/// kernels/attention_decode.cu (each kernel's contract is in its header), and <see cref="AttentionOp"/> on the CUDA backend:
/// the kernel choice and the checks every launcher shares here, one file per launcher family beside it (.Forward,
/// .Backward, .Cached).
/// </summary>
internal static unsafe partial class AttentionKernels
{
    /// <summary>The largest head dim the kernels take (their per-thread accumulators: PHI2_ATTENTION_MAX_D).</summary>
    public const int MaxHeadDim = 128;

    /// <summary>Queries or keys per tile (PHI2_ATTENTION_TILE).</summary>
    public const int Tile = 32;

    /// <summary>Threads per block of the forward and backward kernels: 32 tile rows x 4 lanes (PHI2_ATTENTION_THREADS).</summary>
    public const uint Threads = 128;

    /// <summary>Threads per block of the delta kernel: 8 warps, one row each.</summary>
    public const uint DeltaThreads = 256;

    /// <summary>Threads per block of attention_decode: one warp a chunk.</summary>
    public const uint DecodeThreads = 32;

    private static readonly DType[] Supported = [DType.F32, DType.BF16];

    private static readonly DType[] TensorCoreSupported = [DType.BF16, DType.F16];

    /// <summary>The delta kernel's dtypes: the SIMT backward's, and f16 for the tensor-core backward's checks.</summary>
    private static readonly DType[] DeltaSupported = [DType.F32, DType.BF16, DType.F16];

    /// <summary>Queries per block, and keys per tile, of attention_mma.cu's forward (PHI2_ATTENTION_MMA_ROWS, _KEYS).</summary>
    public const int TensorCoreTile = 64;

    /// <summary>Keys per block of attention_decode.cu (PHI2_ATTENTION_DECODE_KEYS): the split-K chunk.</summary>
    public const int DecodeKeys = 64;

    /// <summary>The most queries a batch row that decodes split-K (attention_decode.cu); more go to the cached forward.</summary>
    public const int DecodeMaxQueries = 4;

    /// <summary>
    /// Whether the tensor-core kernels take this call: a 16-bit dtype, D a multiple of 16 up to <see cref="MaxHeadDim"/> and
    /// q, k, v 16-byte aligned (their cp.async copies); otherwise the SIMT kernels of attention.cu.
    /// </summary>
    public static bool UsesTensorCores(DType dtype, int headDim, DevicePtr q, DevicePtr k, DevicePtr v) =>
        dtype is DType.BF16 or DType.F16 && headDim is >= 16 and <= MaxHeadDim && headDim % 16 == 0 &&
        (q.Address | k.Address | v.Address) % 16 == 0;

    /// <summary>
    /// The one place attention's forward kernel is chosen, from the shapes, dtype and pointers: SIMT (attention.cu) unless
    /// <see cref="UsesTensorCores"/>; through a cache, split-K decoding (attention_decode.cu, ceil(Tmax / <see cref="DecodeKeys"/>)
    /// splits: a grid of the capacity, never the key time) for Tq up to <see cref="DecodeMaxQueries"/>, else the cached
    /// tensor-core forward; the tensor-core kernels' head-dim bound is <see cref="TensorCoreHeadDimBound"/>'s.
    /// </summary>
    public static AttentionChoice Choose(DType dtype, int queryTime, int capacity, int headDim, bool cached, DevicePtr q, DevicePtr k, DevicePtr v)
    {
        if (!UsesTensorCores(dtype, headDim, q, k, v)) return new(AttentionKernel.Simt, 0, 0);
        int bound = TensorCoreHeadDimBound(headDim);
        return cached && queryTime <= DecodeMaxQueries
            ? new(AttentionKernel.SplitKDecode, bound, (int)(((long)capacity + DecodeKeys - 1) / DecodeKeys))
            : new(AttentionKernel.TensorCore, bound, 0);
    }

    /// <summary>Bytes of the split-K decode's fp32 partials (attention_decode.cu: [B * H, splits, Tq, D + 2]); 0 for another choice.</summary>
    public static long DecodePartialsBytes(AttentionChoice choice, int batch, int queryTime, int heads, int headDim) =>
        choice.Kind == AttentionKernel.SplitKDecode ? (long)batch * heads * choice.Splits * queryTime * (headDim + 2) * sizeof(float) : 0;

    /// <summary>
    /// Bytes of the split-K decode's counters (attention_decode.cu: I32 [B * H], the chunks of each (batch row, head) counted
    /// in; zero before a launch and left zero by it); 0 for another choice.
    /// </summary>
    public static long DecodeCountersBytes(AttentionChoice choice, int batch, int heads) =>
        choice.Kind == AttentionKernel.SplitKDecode ? (long)batch * heads * sizeof(int) : 0;

    /// <summary>
    /// The one place the backward's kernel is chosen: attention_mma_backward_{dtype}_d{bound} (tensor cores) under the
    /// forward's rule (<see cref="UsesTensorCores"/>) with dO 16-byte aligned too (the gradients are stored element by
    /// element and need no more than the dtype's alignment); otherwise attention_backward_{dtype} (SIMT).
    /// </summary>
    public static bool BackwardUsesTensorCores(DType dtype, int headDim, DevicePtr dOutput, DevicePtr q, DevicePtr k, DevicePtr v) =>
        UsesTensorCores(dtype, headDim, q, k, v) && dOutput.Address % 16 == 0;

    /// <summary>Keys (or queries) a block of attention_mma_backward owns (PHI2_ATTENTION_BACKWARD_ROWS).</summary>
    public const int TensorCoreBackwardTile = 64;

    /// <summary>
    /// The head-dim bound of the attention_mma_backward kernel that takes <paramref name="headDim"/> (a multiple of 16 up to
    /// <see cref="MaxHeadDim"/>): the smallest of 32, 64, 80, 128 at or above it (its registers are sized to the bound).
    /// </summary>
    public static int TensorCoreHeadDimBound(int headDim) => headDim switch
    {
        <= 32 => 32,
        <= 64 => 64,
        <= 80 => 80,
        _ => 128,
    };

    /// <summary>Rows attention_mma_backward streams per step at a head-dim bound (its header's S: 16 at bound 80, else 32).</summary>
    public static int TensorCoreBackwardStreamRows(int bound) => bound == 80 ? 16 : 32;

    /// <summary>The tensor-core backward's kernel name at <paramref name="headDim"/>: attention_mma_backward_{dtype}_d{bound}.</summary>
    public static string TensorCoreBackwardKernel(DType dtype, int headDim) =>
        KernelName.For("attention_mma_backward", dtype, TensorCoreSupported) + "_d" + TensorCoreHeadDimBound(headDim);

    /// <summary>Dynamic shared memory of an attention_mma_backward block, by its header's formula (above 48 KiB the device opts the kernel in).</summary>
    public static int TensorCoreBackwardSharedBytes(int headDim)
    {
        int rows = TensorCoreBackwardStreamRows(TensorCoreHeadDimBound(headDim));
        return (2 * TensorCoreBackwardTile + 4 * rows) * (headDim + 8) * sizeof(ushort) + 4 * rows * sizeof(float);
    }

    /// <summary>Dynamic shared memory of an attention_mma block, by attention_mma.cu's formula (above 48 KiB the device opts the kernel in).</summary>
    public static int TensorCoreForwardSharedBytes(int headDim) => 4 * TensorCoreTile * (headDim + 8) * sizeof(ushort);

    /// <summary>Dynamic shared memory of an attention_decode block, by attention_decode.cu's formula.</summary>
    public static int DecodeSharedBytes(int headDim) => 2 * DecodeKeys * (headDim + 8) * sizeof(ushort);

    /// <summary>Dynamic shared memory of a forward block, by attention.cu's formula (above 48 KiB the device opts the kernel in).</summary>
    public static int ForwardSharedBytes(int headDim) => (3 * Tile * (headDim | 1) + Tile * (Tile + 1)) * sizeof(float);

    /// <summary>Dynamic shared memory of a backward block, by attention.cu's formula.</summary>
    public static int BackwardSharedBytes(int headDim) =>
        (4 * Tile * (headDim | 1) + 2 * Tile * (Tile + 1) + 2 * Tile) * sizeof(float);

    /// <summary>Tiles of <see cref="Tile"/> rows covering <paramref name="rows"/>.</summary>
    public static int Tiles(int rows) => (int)(((long)rows + Tile - 1) / Tile);

    // Query i (of Tq) sees the keys up to keyTime - Tq + i: Tq (keyTime - Tq) + Tq (Tq + 1) / 2 pairs per batch row and head.
    private static long CausalPairs(int batch, int queryTime, int keyTime, int heads) =>
        (long)batch * heads * ((long)queryTime * (keyTime - queryTime) + (long)queryTime * (queryTime + 1) / 2);

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

/// <summary>Which kind of kernel runs an attention forward (<see cref="AttentionKernels.Choose"/>).</summary>
internal enum AttentionKernel
{
    /// <summary>attention.cu's fp32-tile kernels (any D up to 128, F32 and BF16).</summary>
    Simt,

    /// <summary>attention_mma.cu on tensor cores: attention_mma, or cached_attention_mma through a cache.</summary>
    TensorCore,

    /// <summary>attention_decode.cu: split-K decoding through a cache on tensor cores, the last chunk of each (batch row, head) combining.</summary>
    SplitKDecode,
}

/// <summary>An attention forward's kernel: its kind, the tensor-core head-dim bound (0 for SIMT) and the decode's split count (else 0).</summary>
internal readonly record struct AttentionChoice(AttentionKernel Kind, int Bound, int Splits)
{
    /// <summary>The entry point.</summary>
    public string Kernel(DType dtype, bool cached) => Kind switch
    {
        AttentionKernel.Simt => (cached ? "cached_attention_" : "attention_") + KernelName.Suffix(dtype),
        AttentionKernel.TensorCore => $"{(cached ? "cached_" : "")}attention_mma_{KernelName.Suffix(dtype)}_d{Bound}",
        _ => $"attention_decode_{KernelName.Suffix(dtype)}_d{Bound}",
    };
}
