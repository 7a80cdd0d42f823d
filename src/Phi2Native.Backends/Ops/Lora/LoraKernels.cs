using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Dropout;
using Phi2Native.Cuda;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Lora;

/// <summary>
/// Launchers for kernels/lora.cu (contracts in its header), and <see cref="LoraOp"/> on the CUDA backend: forward is
/// lora_down then lora_up (2 launches beside the base GEMM); backward is lora_weight_grad for dB, lora_up_backward for du,
/// lora_weight_grad for dA and lora_down_backward for dx, each only where its gradient is needed (at most 4).
/// </summary>
internal static unsafe class LoraKernels
{
    /// <summary>Threads per block of every kernel of the family.</summary>
    public const uint BlockSize = 256;

    /// <summary>Rows a block (lora_down, lora_up and their backward), ranks a block (lora_down, lora_up_backward, lora_weight_grad).</summary>
    private const int RowsPerBlock = 8, RanksPerBlock = 16, GradientColumns = 64;

    /// <summary>The bf16 kernels on tensor cores (kernels/lora_mma.cuh): rows a block (down, up_backward, down_backward), columns a block (weight_grad).</summary>
    private const int MmaRowsPerBlock = 32, MmaGradientColumns = 32;

    private static readonly DType[] Supported = [DType.F32, DType.BF16, DType.F16];

    /// <summary><see cref="LoraOp.Forward"/> on the CUDA backend, the contract checked: allocates u [..., r] (F32) and y like the base.</summary>
    public static Tensor Forward(CudaBackend cuda, Tensor x, Tensor baseOutput, Tensor a, Tensor b, LoraBranch branch, LoraShape shape, out Tensor u)
    {
        u = cuda.Allocate([.. x.Shape[..^1], shape.Rank], DType.F32, "u");
        var y = cuda.Allocate(baseOutput.Shape, baseOutput.DType, "y");
        if (shape.Rows == 0) return y;
        var device = cuda.DeviceApi;
        var dtype = x.DType;
        LoraDown(device, dtype, cuda.Pointer(x, nameof(x)), cuda.Pointer(a, nameof(a)), cuda.Pointer(u, "u"), branch.Dropout, branch.Seed,
            shape.Rows, shape.In, shape.Rank, cuda.Stream);
        LoraUp(device, dtype, cuda.Pointer(u, "u"), cuda.Pointer(b, nameof(b)), cuda.Pointer(baseOutput, nameof(baseOutput)), cuda.Pointer(y, "y"),
            branch.Scaling, shape.Rows, shape.Out, shape.Rank, cuda.Stream);
        return y;
    }

    /// <summary><see cref="LoraOp.Backward(Tensor, Tensor, Tensor, Tensor, Tensor, LoraBranch, Tensor?, Tensor?, Tensor?, bool, bool, bool)"/> on the CUDA backend, the contract checked; du [N, r] (F32) is its one temporary.</summary>
    public static void Backward(CudaBackend cuda, Tensor dOutput, Tensor x, Tensor a, Tensor b, Tensor u, LoraBranch branch, LoraShape shape,
        Tensor? dx, Tensor? dA, Tensor? dB, bool accumulateDx = false, bool accumulateA = true, bool accumulateB = true)
    {
        if (shape.Rows == 0)
        {
            // No rows: the adapter's gradients are zero; one to be written (not accumulated) still must be.
            if (dA is not null && !accumulateA) cuda.DeviceApi.Fill(cuda.Pointer(dA, nameof(dA)), 0, 4L * dA.ElementCount, cuda.Stream);
            if (dB is not null && !accumulateB) cuda.DeviceApi.Fill(cuda.Pointer(dB, nameof(dB)), 0, 4L * dB.ElementCount, cuda.Stream);
            return;
        }
        var device = cuda.DeviceApi;
        var dtype = x.DType;
        var dy = cuda.Pointer(dOutput, nameof(dOutput));
        if (dB is not null)
            GradientOfB(device, dtype, dy, cuda.Pointer(u, nameof(u)), cuda.Pointer(dB, nameof(dB)), branch.Scaling, shape.Rows, shape.Out, shape.Rank, cuda.Stream,
                accumulateB);
        if (dx is null && dA is null) return;
        using var du = cuda.Allocate(u.Shape, DType.F32, "du");
        var duPointer = cuda.Pointer(du, "du");
        LoraUpBackward(device, dtype, dy, cuda.Pointer(b, nameof(b)), duPointer, branch.Scaling, shape.Rows, shape.Out, shape.Rank, cuda.Stream);
        if (dA is not null)
            GradientOfA(device, dtype, cuda.Pointer(x, nameof(x)), duPointer, cuda.Pointer(dA, nameof(dA)), branch.Dropout, branch.Seed,
                shape.Rows, shape.In, shape.Rank, cuda.Stream, accumulateA);
        if (dx is not null)
            LoraDownBackward(device, dtype, duPointer, cuda.Pointer(a, nameof(a)), cuda.Pointer(dx, nameof(dx)), branch.Dropout, branch.Seed,
                shape.Rows, shape.In, shape.Rank, cuda.Stream, accumulateDx);
    }

    /// <summary>Launches lora_down_{dtype}: u [rows, rank] = dropout(x) A^T, the mask of <paramref name="seed"/> at drop probability <paramref name="p"/>.</summary>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, or u overlapping an input.</exception>
    /// <exception cref="ArgumentNullException">A null pointer.</exception>
    /// <exception cref="ArgumentOutOfRangeException">p is outside [0, 1), or a size is not positive.</exception>
    public static void LoraDown(IDeviceApi device, DType dtype, DevicePtr x, DevicePtr a, DevicePtr u, double p, ulong seed,
        int rows, int inFeatures, int rank, DeviceStream stream)
    {
        string kernel = Begin(device, "lora_down", dtype, rows, inFeatures, rank);
        LaunchArguments.Pointer(x, dtype, nameof(x));
        LaunchArguments.Pointer(a, DType.F32, nameof(a));
        LaunchArguments.Pointer(u, DType.F32, nameof(u));
        long xBytes = (long)rows * inFeatures * dtype.SizeInBytes(), aBytes = 4L * rank * inFeatures, uBytes = 4L * rows * rank;
        BufferOverlap.RequireNone(x, xBytes, u, uBytes, nameof(x), nameof(u));
        BufferOverlap.RequireNone(a, aBytes, u, uBytes, nameof(a), nameof(u));
        var (threshold, keepScale) = DropoutKernels.Mask(p);
        nint* args = stackalloc nint[]
        {
            (nint)(&x), (nint)(&a), (nint)(&u), (nint)(&threshold), (nint)(&keepScale), (nint)(&seed), (nint)(&rows), (nint)(&inFeatures), (nint)(&rank),
        };
        var cost = dtype == DType.BF16
            ? LoraMmaCost.RowTimesWeight(xBytes + aBytes, uBytes, rows, inFeatures, rank, p > 0)
            : new KernelCost(xBytes + aBytes, uBytes, 0, 2L * rows * inFeatures * rank + (p > 0 ? (long)rows * inFeatures : 0));
        device.Launch(kernel, RowGrid(dtype, rows, rank), BlockSize, 0, stream, new ReadOnlySpan<nint>(args, 9), cost);
    }

    /// <summary>Launches lora_up_{dtype}: y [rows, out] = base + scaling u B^T, summed in fp32 and rounded once.</summary>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, or y overlapping an input.</exception>
    /// <exception cref="ArgumentNullException">A null pointer.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A size is not positive, or the scaling is not finite.</exception>
    public static void LoraUp(IDeviceApi device, DType dtype, DevicePtr u, DevicePtr b, DevicePtr baseOutput, DevicePtr y, double scaling,
        int rows, int outFeatures, int rank, DeviceStream stream)
    {
        string kernel = Begin(device, "lora_up", dtype, rows, outFeatures, rank);
        LaunchArguments.Pointer(u, DType.F32, nameof(u));
        LaunchArguments.Pointer(b, DType.F32, nameof(b));
        LaunchArguments.Pointer(baseOutput, dtype, nameof(baseOutput));
        LaunchArguments.Pointer(y, dtype, nameof(y));
        float factor = Scaling(scaling);
        long uBytes = 4L * rows * rank, bBytes = 4L * outFeatures * rank, yBytes = (long)rows * outFeatures * dtype.SizeInBytes();
        BufferOverlap.RequireNone(u, uBytes, y, yBytes, nameof(u), nameof(y));
        BufferOverlap.RequireNone(b, bBytes, y, yBytes, nameof(b), nameof(y));
        BufferOverlap.RequireNone(baseOutput, yBytes, y, yBytes, nameof(baseOutput), nameof(y));
        nint* args = stackalloc nint[] { (nint)(&u), (nint)(&b), (nint)(&baseOutput), (nint)(&y), (nint)(&factor), (nint)(&rows), (nint)(&outFeatures), (nint)(&rank) };
        var cost = new KernelCost(uBytes + bBytes + yBytes, yBytes, 0, 2L * rows * outFeatures * rank + 2L * rows * outFeatures);
        device.Launch(kernel, ColumnGrid(rows, outFeatures), BlockSize, 0, stream, new ReadOnlySpan<nint>(args, 8), cost);
    }

    /// <summary>
    /// Launches lora_up_gelu_{dtype}: pre [rows, out] = base + scaling u B^T (rounded once), y = gelu_new(pre); pre may be
    /// null (not saved) and may alias base, y may alias base (each element is read before it is written, by one thread).
    /// </summary>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, or an output overlapping u or B, or y overlapping pre.</exception>
    /// <exception cref="ArgumentNullException">A null pointer other than pre.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A size is not positive, or the scaling is not finite.</exception>
    public static void LoraUpGelu(IDeviceApi device, DType dtype, DevicePtr u, DevicePtr b, DevicePtr baseOutput, DevicePtr y, DevicePtr pre,
        double scaling, int rows, int outFeatures, int rank, DeviceStream stream)
    {
        string kernel = Begin(device, "lora_up_gelu", dtype, rows, outFeatures, rank);
        LaunchArguments.Pointer(u, DType.F32, nameof(u));
        LaunchArguments.Pointer(b, DType.F32, nameof(b));
        LaunchArguments.Pointer(baseOutput, dtype, nameof(baseOutput));
        LaunchArguments.Pointer(y, dtype, nameof(y));
        if (!pre.IsNull) LaunchArguments.Pointer(pre, dtype, nameof(pre));
        float factor = Scaling(scaling);
        long uBytes = 4L * rows * rank, bBytes = 4L * outFeatures * rank, yBytes = (long)rows * outFeatures * dtype.SizeInBytes();
        BufferOverlap.RequireNone(u, uBytes, y, yBytes, nameof(u), nameof(y));
        BufferOverlap.RequireNone(b, bBytes, y, yBytes, nameof(b), nameof(y));
        if (!pre.IsNull)
        {
            BufferOverlap.RequireNone(u, uBytes, pre, yBytes, nameof(u), nameof(pre));
            BufferOverlap.RequireNone(b, bBytes, pre, yBytes, nameof(b), nameof(pre));
            BufferOverlap.RequireNone(y, yBytes, pre, yBytes, nameof(y), nameof(pre));
        }
        nint* args = stackalloc nint[]
        {
            (nint)(&u), (nint)(&b), (nint)(&baseOutput), (nint)(&y), (nint)(&pre), (nint)(&factor), (nint)(&rows), (nint)(&outFeatures), (nint)(&rank),
        };
        // Writes y, and pre when saved; ~11 flops of gelu_new an element beside the product and the sum.
        var cost = new KernelCost(uBytes + bBytes + yBytes, pre.IsNull ? yBytes : 2 * yBytes, 0, 2L * rows * outFeatures * rank + 13L * rows * outFeatures);
        device.Launch(kernel, ColumnGrid(rows, outFeatures), BlockSize, 0, stream, new ReadOnlySpan<nint>(args, 9), cost);
    }

    /// <summary>Launches lora_up_backward_{dtype}: du [rows, rank] = scaling dY B.</summary>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, or du overlapping an input.</exception>
    /// <exception cref="ArgumentNullException">A null pointer.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A size is not positive, or the scaling is not finite.</exception>
    public static void LoraUpBackward(IDeviceApi device, DType dtype, DevicePtr dY, DevicePtr b, DevicePtr dU, double scaling,
        int rows, int outFeatures, int rank, DeviceStream stream)
    {
        string kernel = Begin(device, "lora_up_backward", dtype, rows, outFeatures, rank);
        LaunchArguments.Pointer(dY, dtype, nameof(dY));
        LaunchArguments.Pointer(b, DType.F32, nameof(b));
        LaunchArguments.Pointer(dU, DType.F32, nameof(dU));
        float factor = Scaling(scaling);
        long dyBytes = (long)rows * outFeatures * dtype.SizeInBytes(), bBytes = 4L * outFeatures * rank, duBytes = 4L * rows * rank;
        BufferOverlap.RequireNone(dY, dyBytes, dU, duBytes, nameof(dY), nameof(dU));
        BufferOverlap.RequireNone(b, bBytes, dU, duBytes, nameof(b), nameof(dU));
        nint* args = stackalloc nint[] { (nint)(&dY), (nint)(&b), (nint)(&dU), (nint)(&factor), (nint)(&rows), (nint)(&outFeatures), (nint)(&rank) };
        var cost = dtype == DType.BF16
            ? LoraMmaCost.RowTimesWeight(dyBytes + bBytes, duBytes, rows, outFeatures, rank, masked: false)
            : new KernelCost(dyBytes + bBytes, duBytes, 0, 2L * rows * outFeatures * rank + (long)rows * rank);
        device.Launch(kernel, RowGrid(dtype, rows, rank), BlockSize, 0, stream, new ReadOnlySpan<nint>(args, 7), cost);
    }

    /// <summary>Launches lora_down_backward_{dtype}: dx [rows, in] = dropout'(du A), written (=), or added (+=) with <paramref name="accumulate"/>.</summary>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, or dx overlapping an input.</exception>
    /// <exception cref="ArgumentNullException">A null pointer.</exception>
    /// <exception cref="ArgumentOutOfRangeException">p is outside [0, 1), or a size is not positive.</exception>
    public static void LoraDownBackward(IDeviceApi device, DType dtype, DevicePtr dU, DevicePtr a, DevicePtr dX, double p, ulong seed,
        int rows, int inFeatures, int rank, DeviceStream stream, bool accumulate = false)
    {
        string kernel = Begin(device, "lora_down_backward", dtype, rows, inFeatures, rank);
        LaunchArguments.Pointer(dU, DType.F32, nameof(dU));
        LaunchArguments.Pointer(a, DType.F32, nameof(a));
        LaunchArguments.Pointer(dX, dtype, nameof(dX));
        long duBytes = 4L * rows * rank, aBytes = 4L * rank * inFeatures, dxBytes = (long)rows * inFeatures * dtype.SizeInBytes();
        BufferOverlap.RequireNone(dU, duBytes, dX, dxBytes, nameof(dU), nameof(dX));
        BufferOverlap.RequireNone(a, aBytes, dX, dxBytes, nameof(a), nameof(dX));
        var (threshold, keepScale) = DropoutKernels.Mask(p);
        int adds = accumulate ? 1 : 0;
        nint* args = stackalloc nint[]
        {
            (nint)(&dU), (nint)(&a), (nint)(&dX), (nint)(&threshold), (nint)(&keepScale), (nint)(&seed), (nint)(&adds), (nint)(&rows), (nint)(&inFeatures),
            (nint)(&rank),
        };
        // Accumulating, dx is read whole as well.
        long read = duBytes + aBytes + (accumulate ? dxBytes : 0);
        if (dtype == DType.BF16)
        {
            // A warp 32 rows x 32 columns, 8 warps side by side (256 columns) a block.
            var grid = new Dim3((uint)((rows + MmaRowsPerBlock - 1) / MmaRowsPerBlock), (uint)((inFeatures + (int)BlockSize - 1) / (int)BlockSize));
            device.Launch(kernel, grid, BlockSize, 0, stream, new ReadOnlySpan<nint>(args, 10),
                LoraMmaCost.Expand(read, dxBytes, rows, inFeatures, rank, columnsPerWarp: 32, (accumulate ? 2L : 1L) * rows * inFeatures));
            return;
        }
        var cost = new KernelCost(read, dxBytes, 0, 2L * rows * inFeatures * rank + (accumulate ? 2L : 1L) * rows * inFeatures);
        device.Launch(kernel, ColumnGrid(rows, inFeatures), BlockSize, 0, stream, new ReadOnlySpan<nint>(args, 10), cost);
    }

    /// <summary>Launches lora_weight_grad_{dtype} for B: dB [out, rank] += scaling dY^T u, or = with <paramref name="accumulate"/> false.</summary>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, or dB overlapping an input.</exception>
    /// <exception cref="ArgumentNullException">A null pointer.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A size is not positive, or the scaling is not finite.</exception>
    public static void GradientOfB(IDeviceApi device, DType dtype, DevicePtr dY, DevicePtr u, DevicePtr dB, double scaling,
        int rows, int outFeatures, int rank, DeviceStream stream, bool accumulate = true) =>
        WeightGradient(device, dtype, dY, nameof(dY), u, nameof(u), dB, nameof(dB), 0, 0, Scaling(scaling), rows, outFeatures, rank, rank, 1, stream,
            accumulate);

    /// <summary>Launches lora_weight_grad_{dtype} for A: dA [rank, in] += du^T dropout(x), the forward's mask, or = with <paramref name="accumulate"/> false.</summary>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, or dA overlapping an input.</exception>
    /// <exception cref="ArgumentNullException">A null pointer.</exception>
    /// <exception cref="ArgumentOutOfRangeException">p is outside [0, 1), or a size is not positive.</exception>
    public static void GradientOfA(IDeviceApi device, DType dtype, DevicePtr x, DevicePtr dU, DevicePtr dA, double p, ulong seed,
        int rows, int inFeatures, int rank, DeviceStream stream, bool accumulate = true) =>
        WeightGradient(device, dtype, x, nameof(x), dU, nameof(dU), dA, nameof(dA), p, seed, 1f, rows, inFeatures, rank, 1, inFeatures, stream,
            accumulate);

    private static void WeightGradient(IDeviceApi device, DType dtype, DevicePtr left, string leftName, DevicePtr right, string rightName,
        DevicePtr gradient, string gradientName, double p, ulong seed, float scaling, int rows, int width, int rank, int columnStride, int rankStride,
        DeviceStream stream, bool accumulate)
    {
        string kernel = Begin(device, "lora_weight_grad", dtype, rows, width, rank);
        LaunchArguments.Pointer(left, dtype, leftName);
        LaunchArguments.Pointer(right, DType.F32, rightName);
        LaunchArguments.Pointer(gradient, DType.F32, gradientName);
        long leftBytes = (long)rows * width * dtype.SizeInBytes(), rightBytes = 4L * rows * rank, gradientBytes = 4L * width * rank;
        BufferOverlap.RequireNone(left, leftBytes, gradient, gradientBytes, leftName, gradientName);
        BufferOverlap.RequireNone(right, rightBytes, gradient, gradientBytes, rightName, gradientName);
        var (threshold, keepScale) = DropoutKernels.Mask(p);
        int adds = accumulate ? 1 : 0;
        nint* args = stackalloc nint[]
        {
            (nint)(&left), (nint)(&right), (nint)(&gradient), (nint)(&threshold), (nint)(&keepScale), (nint)(&seed), (nint)(&scaling), (nint)(&adds),
            (nint)(&rows), (nint)(&width), (nint)(&rank), (nint)(&columnStride), (nint)(&rankStride),
        };
        // grad is written whole, and read whole when accumulating (+=).
        long read = leftBytes + rightBytes + (accumulate ? gradientBytes : 0);
        bool mma = dtype == DType.BF16;
        var cost = mma
            ? LoraMmaCost.WeightGradient(read, gradientBytes, rows, width, rank, p > 0, accumulate)
            : new KernelCost(read, gradientBytes, 0, 2L * rows * width * rank + (accumulate ? 2L : 1L) * width * rank + (p > 0 ? (long)rows * width : 0));
        int columns = mma ? MmaGradientColumns : GradientColumns;
        var grid = new Dim3((uint)((width + columns - 1) / columns), (uint)((rank + RanksPerBlock - 1) / RanksPerBlock));
        device.Launch(kernel, grid, BlockSize, 0, stream, new ReadOnlySpan<nint>(args, 13), cost);
    }

    // The kernel's name, after the checks every launcher shares.
    private static string Begin(IDeviceApi device, string op, DType dtype, int rows, int width, int rank)
    {
        LaunchArguments.Device(device);
        string kernel = KernelName.For(op, dtype, Supported);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(rows);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(width);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(rank);
        return kernel;
    }

    private static float Scaling(double scaling)
    {
        if (!double.IsFinite(scaling)) throw new ArgumentOutOfRangeException(nameof(scaling), scaling, "the LoRA scaling must be finite");
        return (float)scaling;
    }

    // lora_down, lora_up_backward: 16 ranks a block; a warp a row, 8 rows a block, or on tensor cores (bf16) 32 rows a block.
    private static Dim3 RowGrid(DType dtype, int rows, int rank)
    {
        int rowsPerBlock = dtype == DType.BF16 ? MmaRowsPerBlock : RowsPerBlock;
        return new((uint)((rows + rowsPerBlock - 1) / rowsPerBlock), (uint)((rank + RanksPerBlock - 1) / RanksPerBlock));
    }

    // 8 rows and 256 columns a block (lora_up, lora_down_backward).
    private static Dim3 ColumnGrid(int rows, int columns) =>
        new((uint)((rows + RowsPerBlock - 1) / RowsPerBlock), (uint)((columns + (int)BlockSize - 1) / (int)BlockSize));
}
