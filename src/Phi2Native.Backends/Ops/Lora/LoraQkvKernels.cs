using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Dropout;
using Phi2Native.Cuda;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Lora;

/// <summary>
/// Launchers for kernels/lora_qkv.cu (contracts in its header), and <see cref="LoraQkvOp"/> on the CUDA backend: forward
/// lora_qkv_down then lora_qkv_up (2 launches beside the fused QKV GEMM, for any subset of q, k, v); backward
/// lora_qkv_weight_grad for the B's, lora_qkv_up_backward, lora_qkv_weight_grad for the A's and lora_qkv_down_backward,
/// each only where needed (at most 4).
/// </summary>
internal static unsafe class LoraQkvKernels
{
    /// <summary>Threads per block of every kernel of the family.</summary>
    public const uint BlockSize = 256;

    private const int RowsPerBlock = 8, RanksPerBlock = 16, GradientColumns = 64;

    /// <summary>bf16 on tensor cores: rows a block (down, up_backward, down_backward), columns a block (weight_grad, down_backward).</summary>
    private const int MmaRowsPerBlock = 32, MmaGradientColumns = 32, MmaDownBackwardColumns = 128;

    private static readonly DType[] Supported = [DType.F32, DType.BF16, DType.F16];

    /// <summary>The per-module arguments of one launch (absent modules: rank 0, null pointers, no mask).</summary>
    public struct Modules
    {
        public DevicePtr A0, A1, A2, B0, B1, B2, Grad0, Grad1, Grad2;
        public int Rank0, Rank1, Rank2;
        public uint Threshold0, Threshold1, Threshold2;
        public float Keep0, Keep1, Keep2;
        public ulong Seed0, Seed1, Seed2;
        public float Scaling0, Scaling1, Scaling2;

        /// <summary>The ranks' sum R (u's and du's width).</summary>
        public readonly int Total => Rank0 + Rank1 + Rank2;

        /// <summary>The largest rank.</summary>
        public readonly int Largest => Math.Max(Rank0, Math.Max(Rank1, Rank2));

        /// <summary>How many modules are present.</summary>
        public readonly int Present => (Rank0 > 0 ? 1 : 0) + (Rank1 > 0 ? 1 : 0) + (Rank2 > 0 ? 1 : 0);

        /// <summary>Module m's rank, A, B, mask and scaling set (p and scaling checked by the caller).</summary>
        public void Set(int m, int rank, DevicePtr a, DevicePtr b, double p, ulong seed, double scaling)
        {
            var (threshold, keep) = DropoutKernels.Mask(p);
            switch (m)
            {
                case 0: (Rank0, A0, B0, Threshold0, Keep0, Seed0, Scaling0) = (rank, a, b, threshold, keep, seed, (float)scaling); break;
                case 1: (Rank1, A1, B1, Threshold1, Keep1, Seed1, Scaling1) = (rank, a, b, threshold, keep, seed, (float)scaling); break;
                default: (Rank2, A2, B2, Threshold2, Keep2, Seed2, Scaling2) = (rank, a, b, threshold, keep, seed, (float)scaling); break;
            }
        }
    }

    /// <summary><see cref="LoraQkvOp.Forward"/> on the CUDA backend, the contract checked: allocates u [..., R] (F32) and y like the base.</summary>
    public static Tensor Forward(CudaBackend cuda, Tensor x, Tensor baseOutput, LoraQkvModule?[] modules, int rows, int channels, out Tensor u)
    {
        var arguments = Arguments(cuda, modules);
        u = cuda.Allocate([.. x.Shape[..^1], arguments.Total], DType.F32, "u");
        var y = cuda.Allocate(baseOutput.Shape, baseOutput.DType, "y");
        if (rows == 0) return y;
        var device = cuda.DeviceApi;
        LoraQkvDown(device, x.DType, cuda.Pointer(x, nameof(x)), cuda.Pointer(u, "u"), arguments, rows, channels, cuda.Stream);
        LoraQkvUp(device, x.DType, cuda.Pointer(u, "u"), cuda.Pointer(baseOutput, nameof(baseOutput)), cuda.Pointer(y, "y"), arguments, rows, channels, cuda.Stream);
        return y;
    }

    /// <summary><see cref="LoraQkvOp"/>'s backward on the CUDA backend, the contract checked; du [N, R] (F32) is its one temporary.</summary>
    public static void Backward(CudaBackend cuda, Tensor dOutput, Tensor x, Tensor u, LoraQkvModule?[] modules, Tensor? dx, Tensor?[] dA, Tensor?[] dB,
        bool accumulateDx, int rows, int channels, int accumulateA = 0b111, int accumulateB = 0b111)
    {
        if (rows == 0)
        {
            // No rows: the adapters' gradients are zero; one to be written (not accumulated) still must be.
            for (int m = 0; m < 3; m++)
                foreach (var (gradient, adds) in new[] { (dA[m], (accumulateA >> m) & 1), (dB[m], (accumulateB >> m) & 1) })
                    if (gradient is not null && adds == 0) cuda.DeviceApi.Fill(cuda.Pointer(gradient, "gradient"), 0, 4L * gradient.ElementCount, cuda.Stream);
            return;
        }
        var device = cuda.DeviceApi;
        var dtype = x.DType;
        var dy = cuda.Pointer(dOutput, nameof(dOutput));
        var arguments = Arguments(cuda, modules);
        if (dB.Any(g => g is not null))
        {
            var forB = arguments;
            (forB.Grad0, forB.Grad1, forB.Grad2) = (Grad(cuda, dB[0]), Grad(cuda, dB[1]), Grad(cuda, dB[2]));
            WeightGradient(device, dtype, dy, cuda.Pointer(u, nameof(u)), forB, ofA: false, rows, channels, cuda.Stream, accumulateB);
        }
        if (dx is null && dA.All(g => g is null)) return;
        using var du = cuda.Allocate(u.Shape, DType.F32, "du");
        var duPointer = cuda.Pointer(du, "du");
        LoraQkvUpBackward(device, dtype, dy, duPointer, arguments, rows, channels, cuda.Stream);
        if (dA.Any(g => g is not null))
        {
            var forA = arguments;
            (forA.Grad0, forA.Grad1, forA.Grad2) = (Grad(cuda, dA[0]), Grad(cuda, dA[1]), Grad(cuda, dA[2]));
            WeightGradient(device, dtype, cuda.Pointer(x, nameof(x)), duPointer, forA, ofA: true, rows, channels, cuda.Stream, accumulateA);
        }
        if (dx is not null)
            LoraQkvDownBackward(device, dtype, duPointer, cuda.Pointer(dx, nameof(dx)), arguments, accumulateDx, rows, channels, cuda.Stream);
    }

    /// <summary>Launches lora_qkv_down_{dtype}: u [rows, R] = each present module's dropout(x) A^T, x read once.</summary>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, no module present, or u overlapping an input.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A size is not positive.</exception>
    public static void LoraQkvDown(IDeviceApi device, DType dtype, DevicePtr x, DevicePtr u, Modules m, int rows, int channels, DeviceStream stream)
    {
        string kernel = Begin(device, "lora_qkv_down", dtype, rows, channels, m);
        LaunchArguments.Pointer(x, dtype, nameof(x));
        LaunchArguments.Pointer(u, DType.F32, nameof(u));
        long xBytes = (long)rows * channels * dtype.SizeInBytes(), uBytes = 4L * rows * m.Total, aBytes = 4L * m.Total * channels;
        BufferOverlap.RequireNone(x, xBytes, u, uBytes, nameof(x), nameof(u));
        RequireAdapters(m, u, uBytes, channels, nameof(u));
        nint* args = stackalloc nint[]
        {
            (nint)(&x), (nint)(&m.A0), (nint)(&m.A1), (nint)(&m.A2), (nint)(&u), (nint)(&m.Rank0), (nint)(&m.Rank1), (nint)(&m.Rank2),
            (nint)(&m.Threshold0), (nint)(&m.Threshold1), (nint)(&m.Threshold2), (nint)(&m.Keep0), (nint)(&m.Keep1), (nint)(&m.Keep2),
            (nint)(&m.Seed0), (nint)(&m.Seed1), (nint)(&m.Seed2), (nint)(&rows), (nint)(&channels),
        };
        if (dtype == DType.BF16)
        {
            // Tensor cores (lora_qkv.cu's lora_qkv_mma_down): 32 rows and 16 ranks of every module a block, x staged once.
            var products = default(KernelCost);
            foreach (var (rank, threshold) in new[] { (m.Rank0, m.Threshold0), (m.Rank1, m.Threshold1), (m.Rank2, m.Threshold2) })
                if (rank > 0) products += LoraMmaCost.RowTimesWeight(0, 0, rows, channels, rank, masked: threshold != 0);
            var grid = new Dim3((uint)((rows + MmaRowsPerBlock - 1) / MmaRowsPerBlock), (uint)((m.Largest + RanksPerBlock - 1) / RanksPerBlock));
            device.Launch(kernel, grid, BlockSize, 0, stream, new ReadOnlySpan<nint>(args, 19),
                new KernelCost(xBytes + aBytes, uBytes, products.TensorCoreFlops, products.SimtFlops));
            return;
        }
        var cost = new KernelCost(xBytes + aBytes, uBytes, 0, 2L * rows * channels * m.Total + (long)rows * channels * m.Present);
        int shared = RowsPerBlock * channels * dtype.SizeInBytes();
        device.Launch(kernel, new Dim3((uint)((rows + RowsPerBlock - 1) / RowsPerBlock)), BlockSize, shared, stream, new ReadOnlySpan<nint>(args, 19), cost);
    }

    /// <summary>Launches lora_qkv_up_{dtype}: y [rows, 3 C] = base + each present module's scaling u B^T in its column block.</summary>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, no module present, or y overlapping an input.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A size is not positive.</exception>
    public static void LoraQkvUp(IDeviceApi device, DType dtype, DevicePtr u, DevicePtr baseOutput, DevicePtr y, Modules m, int rows, int channels,
        DeviceStream stream)
    {
        string kernel = Begin(device, "lora_qkv_up", dtype, rows, channels, m);
        LaunchArguments.Pointer(u, DType.F32, nameof(u));
        LaunchArguments.Pointer(baseOutput, dtype, nameof(baseOutput));
        LaunchArguments.Pointer(y, dtype, nameof(y));
        long uBytes = 4L * rows * m.Total, bBytes = 4L * m.Total * channels, yBytes = 3L * rows * channels * dtype.SizeInBytes();
        BufferOverlap.RequireNone(u, uBytes, y, yBytes, nameof(u), nameof(y));
        BufferOverlap.RequireNone(baseOutput, yBytes, y, yBytes, nameof(baseOutput), nameof(y));
        RequireAdapters(m, y, yBytes, channels, nameof(y));
        nint* args = stackalloc nint[]
        {
            (nint)(&u), (nint)(&m.B0), (nint)(&m.B1), (nint)(&m.B2), (nint)(&baseOutput), (nint)(&y), (nint)(&m.Rank0), (nint)(&m.Rank1), (nint)(&m.Rank2),
            (nint)(&m.Scaling0), (nint)(&m.Scaling1), (nint)(&m.Scaling2), (nint)(&rows), (nint)(&channels),
        };
        var cost = new KernelCost(uBytes + bBytes + yBytes, yBytes, 0, 2L * rows * channels * m.Total + 2L * rows * channels * m.Present);
        var grid = new Dim3((uint)((rows + RowsPerBlock - 1) / RowsPerBlock), (uint)((channels + (int)BlockSize - 1) / (int)BlockSize), 3);
        device.Launch(kernel, grid, BlockSize, 0, stream, new ReadOnlySpan<nint>(args, 14), cost);
    }

    /// <summary>Launches lora_qkv_up_backward_{dtype}: du [rows, R] = each present module's scaling dY_m B.</summary>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, no module present, or du overlapping an input.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A size is not positive.</exception>
    public static void LoraQkvUpBackward(IDeviceApi device, DType dtype, DevicePtr dY, DevicePtr dU, Modules m, int rows, int channels, DeviceStream stream)
    {
        string kernel = Begin(device, "lora_qkv_up_backward", dtype, rows, channels, m);
        LaunchArguments.Pointer(dY, dtype, nameof(dY));
        LaunchArguments.Pointer(dU, DType.F32, nameof(dU));
        long dyBytes = 3L * rows * channels * dtype.SizeInBytes(), duBytes = 4L * rows * m.Total, bBytes = 4L * m.Total * channels;
        BufferOverlap.RequireNone(dY, dyBytes, dU, duBytes, nameof(dY), nameof(dU));
        RequireAdapters(m, dU, duBytes, channels, nameof(dU));
        nint* args = stackalloc nint[]
        {
            (nint)(&dY), (nint)(&m.B0), (nint)(&m.B1), (nint)(&m.B2), (nint)(&dU), (nint)(&m.Rank0), (nint)(&m.Rank1), (nint)(&m.Rank2),
            (nint)(&m.Scaling0), (nint)(&m.Scaling1), (nint)(&m.Scaling2), (nint)(&rows), (nint)(&channels),
        };
        // dY's present column blocks only.
        var cost = new KernelCost(dyBytes / 3 * m.Present + bBytes, duBytes, 0, 2L * rows * channels * m.Total + (long)rows * m.Total);
        int rowsPerBlock = RowsPerBlock;
        if (dtype == DType.BF16)
        {
            // Tensor cores (lora_mma.cuh's lora_mma_row_times_weight per module): 32 rows a block.
            var products = default(KernelCost);
            foreach (int rank in new[] { m.Rank0, m.Rank1, m.Rank2 })
                if (rank > 0) products += LoraMmaCost.RowTimesWeight(0, 0, rows, channels, rank, masked: false);
            cost = new KernelCost(cost.BytesRead, cost.BytesWritten, products.TensorCoreFlops, products.SimtFlops);
            rowsPerBlock = MmaRowsPerBlock;
        }
        var grid = new Dim3((uint)((rows + rowsPerBlock - 1) / rowsPerBlock), (uint)((m.Largest + RanksPerBlock - 1) / RanksPerBlock), 3);
        device.Launch(kernel, grid, BlockSize, 0, stream, new ReadOnlySpan<nint>(args, 13), cost);
    }

    /// <summary>
    /// Launches lora_qkv_weight_grad_{dtype}: the present modules' dB [C, r] += scaling dY_m^T u_m (<paramref name="ofA"/>
    /// false, left dY [rows, 3 C], right u) or dA [r, C] += du_m^T dropout_m(x) (left x [rows, C], right du); the gradient
    /// pointers in <paramref name="m"/> (Grad0..2; null: not needed); bit m of <paramref name="accumulate"/> clear: module
    /// m's gradient is written (=) instead.
    /// </summary>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, no module present, or a gradient overlapping an input.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A size is not positive.</exception>
    public static void WeightGradient(IDeviceApi device, DType dtype, DevicePtr left, DevicePtr right, Modules m, bool ofA, int rows, int channels,
        DeviceStream stream, int accumulate = 0b111)
    {
        string kernel = Begin(device, "lora_qkv_weight_grad", dtype, rows, channels, m);
        LaunchArguments.Pointer(left, dtype, nameof(left));
        LaunchArguments.Pointer(right, DType.F32, nameof(right));
        // A module whose gradient is not needed keeps its rank (u's and du's layout) and is skipped by its null pointer.
        long rightBytes = 4L * rows * m.Total, leftBytes = (long)rows * channels * dtype.SizeInBytes() * (ofA ? 1 : 3);
        long gradientBytes = 0, gradientRead = 0, rightRead = 0;
        int computed = 0;
        bool mma = dtype == DType.BF16;
        var tensorCoreCost = default(KernelCost);
        var modules = new[] { (m.Grad0, m.Rank0, m.Threshold0), (m.Grad1, m.Rank1, m.Threshold1), (m.Grad2, m.Rank2, m.Threshold2) };
        for (int index = 0; index < 3; index++)
        {
            var (gradient, rank, threshold) = modules[index];
            if (rank == 0 || gradient.IsNull) continue;
            bool adds = ((accumulate >> index) & 1) != 0;
            if (adds) gradientRead += 4L * rank * channels;
            if (mma) tensorCoreCost += LoraMmaCost.WeightGradient(0, 0, rows, channels, rank, masked: ofA && threshold != 0, adds);
            LaunchArguments.Pointer(gradient, DType.F32, "gradient");
            BufferOverlap.RequireNone(left, leftBytes, gradient, 4L * rank * channels, nameof(left), "gradient");
            BufferOverlap.RequireNone(right, rightBytes, gradient, 4L * rank * channels, nameof(right), "gradient");
            gradientBytes += 4L * rank * channels;
            rightRead += 4L * rows * rank;
            computed++;
        }
        if (gradientBytes == 0) return;
        int adapted = ofA ? 1 : 0;
        if (ofA) (m.Scaling0, m.Scaling1, m.Scaling2) = (1f, 1f, 1f);
        else (m.Threshold0, m.Threshold1, m.Threshold2, m.Keep0, m.Keep1, m.Keep2) = (0, 0, 0, 1f, 1f, 1f);
        nint* args = stackalloc nint[]
        {
            (nint)(&left), (nint)(&right), (nint)(&m.Grad0), (nint)(&m.Grad1), (nint)(&m.Grad2), (nint)(&m.Rank0), (nint)(&m.Rank1), (nint)(&m.Rank2),
            (nint)(&m.Threshold0), (nint)(&m.Threshold1), (nint)(&m.Threshold2), (nint)(&m.Keep0), (nint)(&m.Keep1), (nint)(&m.Keep2),
            (nint)(&m.Seed0), (nint)(&m.Seed1), (nint)(&m.Seed2), (nint)(&m.Scaling0), (nint)(&m.Scaling1), (nint)(&m.Scaling2), (nint)(&adapted),
            (nint)(&accumulate), (nint)(&rows), (nint)(&channels),
        };
        // Only the computed modules' blocks of left (x whole for the A's) and of right are read; grad is written whole, and read
        // whole where it accumulates (+=).
        long leftRead = (long)rows * channels * dtype.SizeInBytes() * (ofA ? 1 : computed);
        long read = leftRead + rightRead + gradientRead;
        var cost = mma
            ? new KernelCost(read, gradientBytes, tensorCoreCost.TensorCoreFlops, tensorCoreCost.SimtFlops)
            : new KernelCost(read, gradientBytes, 0, 2L * rows * gradientBytes / 4 + (gradientBytes + gradientRead) / 4);
        // bf16 on tensor cores: 32 columns a block (kernels/lora_mma.cuh), else 64.
        int columns = mma ? MmaGradientColumns : GradientColumns;
        var grid = new Dim3((uint)((channels + columns - 1) / columns), (uint)((m.Largest + RanksPerBlock - 1) / RanksPerBlock), 3);
        device.Launch(kernel, grid, BlockSize, 0, stream, new ReadOnlySpan<nint>(args, 24), cost);
    }

    /// <summary>Launches lora_qkv_down_backward_{dtype}: dx [rows, C] = the present modules' dropout'(du_m A_m) summed, written (=) or added (+=).</summary>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, no module present, or dx overlapping an input.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A size is not positive.</exception>
    public static void LoraQkvDownBackward(IDeviceApi device, DType dtype, DevicePtr dU, DevicePtr dX, Modules m, bool accumulate, int rows, int channels,
        DeviceStream stream)
    {
        string kernel = Begin(device, "lora_qkv_down_backward", dtype, rows, channels, m);
        LaunchArguments.Pointer(dU, DType.F32, nameof(dU));
        LaunchArguments.Pointer(dX, dtype, nameof(dX));
        long duBytes = 4L * rows * m.Total, aBytes = 4L * m.Total * channels, dxBytes = (long)rows * channels * dtype.SizeInBytes();
        BufferOverlap.RequireNone(dU, duBytes, dX, dxBytes, nameof(dU), nameof(dX));
        RequireAdapters(m, dX, dxBytes, channels, nameof(dX));
        int adds = accumulate ? 1 : 0;
        nint* args = stackalloc nint[]
        {
            (nint)(&dU), (nint)(&m.A0), (nint)(&m.A1), (nint)(&m.A2), (nint)(&dX), (nint)(&m.Rank0), (nint)(&m.Rank1), (nint)(&m.Rank2),
            (nint)(&m.Threshold0), (nint)(&m.Threshold1), (nint)(&m.Threshold2), (nint)(&m.Keep0), (nint)(&m.Keep1), (nint)(&m.Keep2),
            (nint)(&m.Seed0), (nint)(&m.Seed1), (nint)(&m.Seed2), (nint)(&adds), (nint)(&rows), (nint)(&channels),
        };
        long epilogue = (2L * m.Present + (accumulate ? 1 : 0)) * rows * channels;
        var cost = new KernelCost(duBytes + aBytes + (accumulate ? dxBytes : 0), dxBytes, 0, 2L * rows * channels * m.Total + epilogue);
        var grid = new Dim3((uint)((rows + RowsPerBlock - 1) / RowsPerBlock), (uint)((channels + (int)BlockSize - 1) / (int)BlockSize));
        if (dtype == DType.BF16)
        {
            // Tensor cores (lora_qkv.cu's lora_qkv_mma_down_backward): a warp 32 rows x 16 columns, 128 columns a block.
            var products = new KernelCost(0, 0, 0, epilogue);
            foreach (int rank in new[] { m.Rank0, m.Rank1, m.Rank2 })
                if (rank > 0) products += LoraMmaCost.Expand(0, 0, rows, channels, rank, columnsPerWarp: 16, epilogueFlops: 0);
            cost = new KernelCost(cost.BytesRead, cost.BytesWritten, products.TensorCoreFlops, products.SimtFlops);
            grid = new Dim3((uint)((rows + MmaRowsPerBlock - 1) / MmaRowsPerBlock), (uint)((channels + MmaDownBackwardColumns - 1) / MmaDownBackwardColumns));
        }
        device.Launch(kernel, grid, BlockSize, 0, stream, new ReadOnlySpan<nint>(args, 20), cost);
    }

    private static Modules Arguments(CudaBackend cuda, LoraQkvModule?[] modules)
    {
        var arguments = new Modules();
        for (int m = 0; m < 3; m++)
        {
            if (modules[m] is not { } module) continue;
            arguments.Set(m, module.A.Size(0), cuda.Pointer(module.A, "A"), cuda.Pointer(module.B, "B"), module.Branch.Dropout, module.Branch.Seed,
                module.Branch.Scaling);
        }
        return arguments;
    }

    private static DevicePtr Grad(CudaBackend cuda, Tensor? gradient) => gradient is null ? DevicePtr.Null : cuda.Pointer(gradient, "gradient");

    // Each present module's A [r, C] and B [C, r]: fp32-aligned pointers that the output does not overlap.
    private static void RequireAdapters(Modules m, DevicePtr output, long outputBytes, int channels, string outputName)
    {
        foreach (var (a, b, rank) in new[] { (m.A0, m.B0, m.Rank0), (m.A1, m.B1, m.Rank1), (m.A2, m.B2, m.Rank2) })
        {
            if (rank == 0) continue;
            LaunchArguments.Pointer(a, DType.F32, "a");
            LaunchArguments.Pointer(b, DType.F32, "b");
            BufferOverlap.RequireNone(a, 4L * rank * channels, output, outputBytes, "a", outputName);
            BufferOverlap.RequireNone(b, 4L * rank * channels, output, outputBytes, "b", outputName);
        }
    }

    private static string Begin(IDeviceApi device, string op, DType dtype, int rows, int channels, Modules m)
    {
        LaunchArguments.Device(device);
        string kernel = KernelName.For(op, dtype, Supported);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(rows);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(channels);
        if (m.Present == 0) throw new ArgumentException($"{op}: no module (q, k, v) is present", nameof(m));
        return kernel;
    }
}
