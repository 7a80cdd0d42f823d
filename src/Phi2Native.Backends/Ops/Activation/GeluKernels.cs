using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Activation;

/// <summary>Launchers for kernels/gelu.cu (each kernel's contract is in its header), and <see cref="GeluNewOp"/> on the CUDA backend.</summary>
internal static unsafe class GeluKernels
{
    /// <summary><see cref="GeluNewOp.Forward"/> on the CUDA backend, the contract checked.</summary>
    internal static Tensor Forward(CudaBackend cuda, Tensor x)
    {
        var y = cuda.Allocate(x.Shape, x.DType, nameof(x));
        if (x.ElementCount > 0) GeluNew(cuda.DeviceApi, x.DType, cuda.Pointer(x, nameof(x)), cuda.Pointer(y, "y"), x.ElementCount, cuda.Stream);
        return y;
    }

    /// <summary><see cref="GeluNewOp"/>'s backward on the CUDA backend, the contract checked.</summary>
    internal static void Backward(CudaBackend cuda, Tensor dOutput, Tensor x, Tensor dx)
    {
        if (x.ElementCount > 0)
            GeluNewBackward(cuda.DeviceApi, x.DType, cuda.Pointer(dOutput, nameof(dOutput)), cuda.Pointer(x, nameof(x)), cuda.Pointer(dx, nameof(dx)),
                x.ElementCount, cuda.Stream);
    }

    /// <summary>Threads per block of the one-thread-per-element kernels.</summary>
    public const uint BlockSize = 256;

    /// <summary>Columns per block of bias_gelu_new_backward (its header: block (64 / V, 32)).</summary>
    public const int BackwardColumns = 64;

    /// <summary>Row lanes (blockDim.y) of bias_gelu_new_backward, whose dBias sums the block adds in lane order.</summary>
    public const int BackwardLanes = 32;

    /// <summary>gridDim.y's limit (cuLaunchKernel): the bias kernels walk the rows beyond it.</summary>
    public const int MaxRowBlocks = 65535;

    private static readonly DType[] Supported = [DType.F32, DType.BF16, DType.F16];

    // gelu_new or its derivative per element as the cost counts it: the tanh as 1, about 10 flops in all.
    private const int GeluFlops = 10;

    /// <summary>Launches gelu.cu's gelu_new_{dtype} over <paramref name="n"/> elements (contract in its header).</summary>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, or an output that partly overlaps an input (the same pointer, in place, is allowed).</exception>
    /// <exception cref="ArgumentNullException">A null pointer.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="n"/> is not in 1..2^31-1.</exception>
    public static void GeluNew(IDeviceApi device, DType dtype, DevicePtr x, DevicePtr y, long n, DeviceStream stream = default)
    {
        LaunchArguments.Device(device);
        string kernel = KernelName.For("gelu_new", dtype, Supported);
        LaunchArguments.Pointer(x, dtype, nameof(x));
        LaunchArguments.Pointer(y, dtype, nameof(y));
        int count = LaunchShape.Count(n, nameof(n));
        BufferOverlap.RequireExactOrNone(x, y, count * (long)dtype.SizeInBytes(), nameof(x), nameof(y));
        nint* args = stackalloc nint[] { (nint)(&x), (nint)(&y), (nint)(&count) };
        // One thread per 16-byte vector (gelu.cu's header).
        long vectors = (n + VectorElements(dtype) - 1) / VectorElements(dtype);
        device.Launch(kernel, LaunchShape.Linear(vectors, BlockSize), BlockSize, 0, stream, new ReadOnlySpan<nint>(args, 3), KernelCost.Elementwise(n, dtype, 1, 1, GeluFlops));
    }

    /// <summary>Launches gelu.cu's gelu_new_backward_{dtype} over <paramref name="n"/> elements (contract in its header).</summary>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, or an output that partly overlaps an input (the same pointer, in place, is allowed).</exception>
    /// <exception cref="ArgumentNullException">A null pointer.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="n"/> is not in 1..2^31-1.</exception>
    public static void GeluNewBackward(IDeviceApi device, DType dtype, DevicePtr dY, DevicePtr x, DevicePtr dX, long n, DeviceStream stream = default)
    {
        LaunchArguments.Device(device);
        string kernel = KernelName.For("gelu_new_backward", dtype, Supported);
        LaunchArguments.Pointer(dY, dtype, nameof(dY));
        LaunchArguments.Pointer(x, dtype, nameof(x));
        LaunchArguments.Pointer(dX, dtype, nameof(dX));
        int count = LaunchShape.Count(n, nameof(n));
        long bytes = count * (long)dtype.SizeInBytes();
        BufferOverlap.RequireExactOrNone(dY, dX, bytes, nameof(dY), nameof(dX));
        BufferOverlap.RequireExactOrNone(x, dX, bytes, nameof(x), nameof(dX));
        nint* args = stackalloc nint[] { (nint)(&dY), (nint)(&x), (nint)(&dX), (nint)(&count) };
        device.Launch(kernel, LaunchShape.Linear(n, BlockSize), BlockSize, 0, stream, new ReadOnlySpan<nint>(args, 4), KernelCost.Elementwise(n, dtype, 2, 1, GeluFlops));
    }

    /// <summary>
    /// Launches gelu.cu's bias_gelu_new_{dtype} over [rows, C] (contract in its header; a null <paramref name="pre"/> saves
    /// nothing), with at most <paramref name="maxRowBlocks"/> row blocks: checks pass a small value so each block walks several rows.
    /// </summary>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, pre equal to or overlapping y, or an output that partly overlaps x.</exception>
    /// <exception cref="ArgumentNullException">A null x, bias or y.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A negative row count, no channels, or maxRowBlocks outside 1..65535.</exception>
    public static void BiasGeluNew(IDeviceApi device, DType dtype, DevicePtr x, DevicePtr bias, DevicePtr y, DevicePtr pre, int rows, int channels,
        DeviceStream stream = default, int maxRowBlocks = MaxRowBlocks)
    {
        LaunchArguments.Device(device);
        string kernel = KernelName.For("bias_gelu_new", dtype, Supported);
        LaunchArguments.Pointer(x, dtype, nameof(x));
        LaunchArguments.Pointer(bias, dtype, nameof(bias));
        LaunchArguments.Pointer(y, dtype, nameof(y));
        bool savePre = LaunchArguments.OptionalPointer(pre, dtype, nameof(pre));
        CheckMatrix(rows, channels, maxRowBlocks);
        long bytes = (long)rows * channels * dtype.SizeInBytes();
        BufferOverlap.RequireExactOrNone(x, y, bytes, nameof(x), nameof(y));
        if (savePre)
        {
            if (pre == y) throw new ArgumentException("pre must not be y: both are written, with different values", nameof(pre));
            BufferOverlap.RequireExactOrNone(x, pre, bytes, nameof(x), nameof(pre));
            BufferOverlap.RequireNone(y, bytes, pre, bytes, nameof(y), nameof(pre));
        }
        if (rows == 0) return;
        nint* args = stackalloc nint[] { (nint)(&x), (nint)(&bias), (nint)(&y), (nint)(&pre), (nint)(&rows), (nint)(&channels) };
        long elements = (long)rows * channels, size = dtype.SizeInBytes();
        int vectors = (channels + VectorElements(dtype) - 1) / VectorElements(dtype);
        device.Launch(kernel, Grid(rows, vectors, maxRowBlocks), LaunchShape.RowBlock(vectors), 0, stream, new ReadOnlySpan<nint>(args, 6),
            new KernelCost((elements + channels) * size, elements * size * (savePre ? 2 : 1), 0, (GeluFlops + 1) * elements));
    }

    /// <summary>
    /// Launches gelu.cu's bias_gelu_new_backward_{dtype} over [rows, C] (contract in its header): one launch gives dX and
    /// the fp32 bias gradient, summed in a fixed order (no atomics); both outputs null launches nothing.
    /// </summary>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, or an output that partly overlaps an input (the same pointer, in place, is allowed).</exception>
    /// <exception cref="ArgumentNullException">A null dY or pre.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A negative row count or no channels.</exception>
    public static void BiasGeluNewBackward(IDeviceApi device, DType dtype, DevicePtr dY, DevicePtr pre, DevicePtr dX, DevicePtr dBias, int rows, int channels,
        DeviceStream stream = default)
    {
        LaunchArguments.Device(device);
        string kernel = KernelName.For("bias_gelu_new_backward", dtype, Supported);
        LaunchArguments.Pointer(dY, dtype, nameof(dY));
        LaunchArguments.Pointer(pre, dtype, nameof(pre));
        bool wantDx = LaunchArguments.OptionalPointer(dX, dtype, nameof(dX));
        bool wantBias = LaunchArguments.OptionalPointer(dBias, DType.F32, nameof(dBias));
        CheckMatrix(rows, channels, MaxRowBlocks);
        long bytes = (long)rows * channels * dtype.SizeInBytes();
        if (wantDx)
        {
            BufferOverlap.RequireExactOrNone(dY, dX, bytes, nameof(dY), nameof(dX));
            BufferOverlap.RequireExactOrNone(pre, dX, bytes, nameof(pre), nameof(dX));
        }
        if (wantBias)
        {
            BufferOverlap.RequireNone(dY, bytes, dBias, channels * (long)sizeof(float), nameof(dY), nameof(dBias));
            BufferOverlap.RequireNone(pre, bytes, dBias, channels * (long)sizeof(float), nameof(pre), nameof(dBias));
        }
        if (rows == 0 || !(wantDx || wantBias)) return;
        nint* args = stackalloc nint[] { (nint)(&dY), (nint)(&pre), (nint)(&dX), (nint)(&dBias), (nint)(&rows), (nint)(&channels) };
        long elements = (long)rows * channels, size = dtype.SizeInBytes(), biasBytes = wantBias ? (long)channels * sizeof(float) : 0;
        var grid = new Dim3((uint)((channels + BackwardColumns - 1) / BackwardColumns));
        var block = new Dim3((uint)(BackwardColumns / VectorElements(dtype)), BackwardLanes);
        // dY and pre read, dX written; dBias (fp32, +=) read and written.
        device.Launch(kernel, grid, block, 0, stream, new ReadOnlySpan<nint>(args, 6),
            new KernelCost(2 * elements * size + biasBytes, (wantDx ? elements * size : 0) + biasBytes, 0, GeluFlops * elements));
    }

    /// <summary>Elements of the dtype in one 16-byte vector (the kernels' V): 4 fp32, 8 bf16 or fp16.</summary>
    public static int VectorElements(DType dtype) => 16 / dtype.SizeInBytes();

    private static void CheckMatrix(int rows, int channels, int maxRowBlocks, string capArgument = "maxRowBlocks")
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(channels);
        if (maxRowBlocks < 1 || maxRowBlocks > MaxRowBlocks)
            throw new ArgumentOutOfRangeException(capArgument, maxRowBlocks, $"the row blocks must be in 1..{MaxRowBlocks} (gridDim.y)");
    }

    /// <summary>Column blocks of RowBlock(vectors) threads across, and up to <paramref name="maxRowBlocks"/> row blocks down.</summary>
    private static Dim3 Grid(int rows, int vectors, int maxRowBlocks)
    {
        uint block = LaunchShape.RowBlock(vectors);
        return new Dim3((uint)((vectors + block - 1) / block), (uint)Math.Min(rows, maxRowBlocks));
    }
}
