using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Attention;

/// <summary>
/// The backward: kernels/attention.cu's delta kernel, then kernels/attention_mma_backward.cu on tensor cores or
/// kernels/attention.cu's SIMT backward (<see cref="BackwardUsesTensorCores"/>).
/// </summary>
internal static unsafe partial class AttentionKernels
{
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

    /// <summary>
    /// Launches attention.cu's attention_backward_delta_{dtype} into <paramref name="delta"/> (when dq or dk is wanted), then
    /// attention_mma_backward_{dtype}_d{bound} where <see cref="BackwardUsesTensorCores"/> says so, else attention_backward_{dtype}
    /// (one contract, in attention.cu's header); all gradients null launches nothing.
    /// </summary>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, or an output overlapping an input or another output.</exception>
    /// <exception cref="ArgumentNullException">A null input, or a null delta when dq or dk is wanted.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A dimension out of range, or Tk &lt; Tq.</exception>
    public static void AttentionBackward(IDeviceApi device, DType dtype, DevicePtr dOutput, DevicePtr q, DevicePtr k, DevicePtr v,
        DevicePtr output, DevicePtr logSumExp, DevicePtr delta, DevicePtr dq, DevicePtr dk, DevicePtr dv, int batch, int queryTime,
        int keyTime, int heads, int headDim, DeviceStream stream = default)
    {
        LaunchArguments.Device(device);
        bool tensorCores = BackwardUsesTensorCores(dtype, headDim, dOutput, q, k, v);
        string kernel = tensorCores ? TensorCoreBackwardKernel(dtype, headDim) : KernelName.For("attention_backward", dtype, Supported);
        string deltaKernel = KernelName.For("attention_backward_delta", dtype, DeltaSupported);
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

        int tile = tensorCores ? TensorCoreBackwardTile : Tile;
        int keyTiles = wantDk || wantDv ? TilesOf(keyTime, tile) : 0, queryTiles = wantDq ? TilesOf(queryTime, tile) : 0;
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
        device.Launch(kernel, new Dim3((uint)dims.Pairs, (uint)(keyTiles + queryTiles)), Threads,
            tensorCores ? TensorCoreBackwardSharedBytes(headDim) : BackwardSharedBytes(headDim), stream, new ReadOnlySpan<nint>(args, 13),
            BackwardCost(dims, CausalPairs(batch, queryTime, keyTime, heads), headDim, wantDq, wantDk, wantDv, tensorCores));
    }

    private static int TilesOf(int rows, int tile) => (int)(((long)rows + tile - 1) / tile);

    // dO, q, k, v, lse and (when dq or dk is wanted) delta read; dq, dk, dv written as wanted. Per visible pair, key-tile
    // blocks recompute s (2 D flops) and form dv (2 D), and with dk also dp and dk (4 D); query-tile blocks recompute s and
    // dp and form dq (6 D); forming p and ds is ~6 SIMT flops a pair in each kind of block. attention_mma_backward does the
    // products on tensor cores (its SASS has them per resources.tsv); the SIMT kernel forms dp whenever it runs key blocks.
    private static KernelCost BackwardCost(Dims dims, long pairs, int headDim, bool wantDq, bool wantDk, bool wantDv, bool tensorCores)
    {
        bool keyBlocks = wantDk || wantDv;
        int keyProducts = !keyBlocks ? 0 : wantDk || !tensorCores ? 8 : 4;
        long products = pairs * headDim * (keyProducts + (wantDq ? 6 : 0));
        long softmax = pairs * 6 * ((keyBlocks ? 1 : 0) + (wantDq ? 1 : 0));
        bool wantDelta = wantDq || wantDk;
        return new KernelCost(2 * dims.QueryBytes + 2 * dims.KeyBytes + (wantDelta ? 2 : 1) * dims.LseBytes,
            (wantDq ? dims.QueryBytes : 0) + (wantDk ? dims.KeyBytes : 0) + (wantDv ? dims.KeyBytes : 0),
            tensorCores ? products : 0, tensorCores ? softmax : products + softmax);
    }
}
