using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Attention;

/// <summary>
/// The forward: kernels/attention_mma.cu on tensor cores or kernels/attention.cu's SIMT kernel (<see cref="Choose"/>).
/// </summary>
internal static unsafe partial class AttentionKernels
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

    /// <summary>
    /// Launches attention_mma.cu's attention_mma_{dtype}_d{bound} or attention.cu's attention_{dtype}, as <see cref="Choose"/>
    /// picks (one contract, in attention.cu's header); B = 0 or Tq = 0 launches nothing.
    /// </summary>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, or an output overlapping an input.</exception>
    /// <exception cref="ArgumentNullException">A null input or output.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A dimension out of range, or Tk &lt; Tq.</exception>
    public static void Attention(IDeviceApi device, DType dtype, DevicePtr q, DevicePtr k, DevicePtr v, DevicePtr output, DevicePtr logSumExp,
        int batch, int queryTime, int keyTime, int heads, int headDim, DeviceStream stream = default)
    {
        LaunchArguments.Device(device);
        var choice = Choose(dtype, queryTime, keyTime, headDim, cached: false, q, k, v);
        bool tensorCores = choice.Kind == AttentionKernel.TensorCore;
        KernelName.For(tensorCores ? "attention_mma" : "attention", dtype, tensorCores ? TensorCoreSupported : Supported); // refuses a dtype without kernels
        string kernel = choice.Kernel(dtype, cached: false);
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
}
