using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Loss;

/// <summary>
/// Launchers for kernels/cross_entropy.cu: softmax cross-entropy of logits [rows, V] (F32 or BF16, fp32 math) against
/// I32 targets, rows whose target is the ignore index left out, as the CPU backend computes it (<see cref="CrossEntropyOp"/>).
/// <see cref="CrossEntropy"/> saves the per-row log-sum-exp;
/// <see cref="CrossEntropySum"/> forms the CPU's total (a double sum in row order, rounded to fp32), the counted rows
/// and the mean; <see cref="CrossEntropyBackward"/> writes dLogits.
/// </summary>
/// <remarks>
/// The CPU backend refuses a target outside [0, V) that is not the ignore index; a kernel cannot throw, so such a row
/// gets a NaN loss, a NaN term in the sum and a NaN gradient row (never an out-of-bounds read). Targets come from the
/// host, which checks them before the upload.
/// </remarks>
public static unsafe class CrossEntropyKernels
{
    /// <summary>
    /// <see cref="CrossEntropyOp.Forward"/> on the CUDA backend, the contract checked: per-row lse, then the CPU's sum
    /// and the mean, and the count, all left on the device.
    /// </summary>
    internal static Tensor Forward(CudaBackend cuda, Tensor logits, Tensor targets, int ignoreIndex, int rows, int vocab,
        out Tensor logSumExp, out Tensor counted)
    {
        logSumExp = cuda.Allocate([rows], DType.F32, nameof(logSumExp));
        counted = cuda.Allocate([1], DType.I32, nameof(counted));
        var loss = cuda.Allocate([1], DType.F32, "loss");
        var (device, stream) = (cuda.DeviceApi, cuda.Stream);
        var (pLoss, pCounted) = (cuda.Pointer(loss, "loss"), cuda.Pointer(counted, nameof(counted)));
        if (rows == 0)
        {
            device.Fill(pLoss, 0, sizeof(float), stream);
            device.Fill(pCounted, 0, sizeof(int), stream);
            return loss;
        }
        var (pl, pt, pLse) = (cuda.Pointer(logits, nameof(logits)), cuda.Pointer(targets, nameof(targets)), cuda.Pointer(logSumExp, nameof(logSumExp)));
        CrossEntropy(device, logits.DType, pl, pt, pLse, default, rows, vocab, ignoreIndex, stream);
        using var sum = cuda.Allocate([1], DType.F32, "loss sum");
        CrossEntropySum(device, logits.DType, pl, pt, pLse, cuda.Pointer(sum, "loss sum"), pLoss, pCounted, rows, vocab, ignoreIndex, stream);
        return loss;
    }

    /// <summary><see cref="CrossEntropyOp"/>'s backward on the CUDA backend, the contract checked: the count and dLoss are read on the device.</summary>
    internal static void Backward(CudaBackend cuda, Tensor logits, Tensor targets, Tensor logSumExp, Tensor counted, Tensor? dLoss, int ignoreIndex, Tensor dLogits)
    {
        int rows = logits.Size(0), vocab = logits.Size(1);
        if (rows == 0) return;
        CrossEntropyBackward(cuda.DeviceApi, logits.DType, cuda.Pointer(logits, nameof(logits)), cuda.Pointer(targets, nameof(targets)),
            cuda.Pointer(logSumExp, nameof(logSumExp)), cuda.Pointer(counted, nameof(counted)), cuda.OptionalPointer(dLoss, nameof(dLoss)),
            cuda.Pointer(dLogits, nameof(dLogits)), rows, vocab, ignoreIndex, cuda.Stream);
    }

    /// <summary>PyTorch's default ignore index (CrossEntropyOp's too).</summary>
    public const int DefaultIgnoreIndex = -100;

    /// <summary>Threads of the one block of <c>cross_entropy_sum</c>: rows are loaded 256 at a time.</summary>
    public const uint SumBlock = 256;

    private static readonly DType[] Supported = [DType.F32, DType.BF16];

    /// <summary>
    /// lse[r] = log sum_v exp(logits[r, v]) for every row (saved for backward) and, when <paramref name="loss"/> is
    /// given, loss[r] = lse[r] - logits[r, targets[r]] on counted rows and 0 on ignored rows, in one pass over each row.
    /// Launch: grid (rows), block <see cref="LaunchShape.RowBlock"/>(V), no dynamic shared memory.
    /// </summary>
    /// <param name="device">The device.</param>
    /// <param name="dtype">F32 or BF16: the logits.</param>
    /// <param name="logits">[rows, V] scores.</param>
    /// <param name="targets">[rows] I32 ids in [0, V), or <paramref name="ignoreIndex"/>.</param>
    /// <param name="logSumExp">[rows] fp32, written; saved for backward.</param>
    /// <param name="loss">[rows] fp32 per-row loss, written; null when not needed.</param>
    /// <param name="rows">Rows (N); 0 launches nothing.</param>
    /// <param name="vocabSize">V, at least 1.</param>
    /// <param name="ignoreIndex">The target value that leaves a row out (<see cref="DefaultIgnoreIndex"/>).</param>
    /// <param name="stream">The stream.</param>
    /// <exception cref="ArgumentException">An unsupported dtype or a misaligned pointer.</exception>
    /// <exception cref="ArgumentNullException">A null pointer other than <paramref name="loss"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A negative row count or no vocabulary.</exception>
    public static void CrossEntropy(IDeviceApi device, DType dtype, DevicePtr logits, DevicePtr targets, DevicePtr logSumExp, DevicePtr loss,
        int rows, int vocabSize, int ignoreIndex = DefaultIgnoreIndex, DeviceStream stream = default)
    {
        LaunchArguments.Device(device);
        string kernel = KernelName.For("cross_entropy", dtype, Supported);
        LaunchArguments.Pointer(logits, dtype, nameof(logits));
        LaunchArguments.Pointer(targets, DType.I32, nameof(targets));
        LaunchArguments.Pointer(logSumExp, DType.F32, nameof(logSumExp));
        LaunchArguments.OptionalPointer(loss, DType.F32, nameof(loss));
        CheckSizes(rows, vocabSize);
        if (rows == 0) return;
        nint* args = stackalloc nint[]
        {
            (nint)(&logits), (nint)(&targets), (nint)(&logSumExp), (nint)(&loss), (nint)(&rows), (nint)(&vocabSize), (nint)(&ignoreIndex),
        };
        long elements = (long)rows * vocabSize;
        // logits and targets read; lse and loss written. ~4 flops a logit (max, subtract, exp, add).
        device.Launch(kernel, new Dim3((uint)rows), LaunchShape.RowBlock(vocabSize), 0, stream, new ReadOnlySpan<nint>(args, 7),
            new KernelCost(elements * dtype.SizeInBytes() + (long)rows * sizeof(int), (long)rows * sizeof(float) * (loss.IsNull ? 1 : 2), 0, 4 * elements));
    }

    /// <summary>
    /// The CPU backend's total over the rows <see cref="CrossEntropy"/> has seen: lossSum = (float) of the double sum,
    /// in row order, of (double)lse[r] - (double)logits[r, targets[r]] over counted rows; counted = the number of
    /// counted rows; and lossMean = lossSum * (float)(1.0 / counted) (<see cref="CrossEntropyOp"/>'s loss), lossSum (0)
    /// when no row counts. Given the
    /// same lse, equal to the CPU's bit for bit. Rows may be 0: the outputs are still written (0, 0, 0).
    /// Launch: grid (1), block <see cref="SumBlock"/>, no dynamic shared memory.
    /// </summary>
    /// <param name="device">The device.</param>
    /// <param name="dtype">F32 or BF16: the logits.</param>
    /// <param name="logits">[rows, V] as in forward.</param>
    /// <param name="targets">[rows] I32, as in forward.</param>
    /// <param name="logSumExp">[rows] fp32, saved by forward.</param>
    /// <param name="lossSum">[1] fp32, written.</param>
    /// <param name="lossMean">[1] fp32, written; null when not needed.</param>
    /// <param name="counted">[1] I32, written.</param>
    /// <param name="rows">Rows (N), at least 0.</param>
    /// <param name="vocabSize">V, at least 1.</param>
    /// <param name="ignoreIndex">As in forward.</param>
    /// <param name="stream">The stream.</param>
    /// <exception cref="ArgumentException">An unsupported dtype or a misaligned pointer.</exception>
    /// <exception cref="ArgumentNullException">A null pointer other than <paramref name="lossMean"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A negative row count or no vocabulary.</exception>
    public static void CrossEntropySum(IDeviceApi device, DType dtype, DevicePtr logits, DevicePtr targets, DevicePtr logSumExp,
        DevicePtr lossSum, DevicePtr lossMean, DevicePtr counted, int rows, int vocabSize, int ignoreIndex = DefaultIgnoreIndex,
        DeviceStream stream = default)
    {
        LaunchArguments.Device(device);
        string kernel = KernelName.For("cross_entropy_sum", dtype, Supported);
        LaunchArguments.Pointer(logits, dtype, nameof(logits));
        LaunchArguments.Pointer(targets, DType.I32, nameof(targets));
        LaunchArguments.Pointer(logSumExp, DType.F32, nameof(logSumExp));
        LaunchArguments.Pointer(lossSum, DType.F32, nameof(lossSum));
        LaunchArguments.OptionalPointer(lossMean, DType.F32, nameof(lossMean));
        LaunchArguments.Pointer(counted, DType.I32, nameof(counted));
        CheckSizes(rows, vocabSize);
        nint* args = stackalloc nint[]
        {
            (nint)(&logits), (nint)(&targets), (nint)(&logSumExp), (nint)(&rows), (nint)(&vocabSize), (nint)(&ignoreIndex),
            (nint)(&lossSum), (nint)(&lossMean), (nint)(&counted),
        };
        // targets, lse and each counted row's target logit read (ignored rows read no logit: an upper bound); the sum, mean and count written.
        device.Launch(kernel, new Dim3(1), SumBlock, 0, stream, new ReadOnlySpan<nint>(args, 9),
            new KernelCost((long)rows * (sizeof(int) + sizeof(float) + dtype.SizeInBytes()), sizeof(float) * (lossMean.IsNull ? 1 : 2) + sizeof(int), 0, 2L * rows));
    }

    /// <summary>
    /// dLogits (=) = (float)(1 / counted) * dLoss * (softmax - onehot) on counted rows, 0 on ignored rows, the count and
    /// dLoss read on the device (see cross_entropy.cu). Launch: grid (rows), block <see cref="LaunchShape.RowBlock"/>(V),
    /// no dynamic shared memory.
    /// </summary>
    /// <param name="device">The device.</param>
    /// <param name="dtype">F32 or BF16: logits and dLogits.</param>
    /// <param name="logits">[rows, V].</param>
    /// <param name="targets">[rows] I32.</param>
    /// <param name="logSumExp">[rows] fp32, saved by forward.</param>
    /// <param name="counted">[1] I32, the rows forward counted.</param>
    /// <param name="dLoss">[1] fp32, the loss's gradient; null for 1.</param>
    /// <param name="dLogits">[rows, V] written; may alias logits.</param>
    /// <param name="rows">Rows; 0 launches nothing.</param>
    /// <param name="vocabSize">V, at least 1.</param>
    /// <param name="ignoreIndex">The target that marks an ignored row.</param>
    /// <param name="stream">The stream.</param>
    /// <exception cref="ArgumentException">An unsupported dtype or a misaligned pointer.</exception>
    /// <exception cref="ArgumentNullException">A null pointer other than dLoss.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A negative row count or no vocabulary.</exception>
    public static void CrossEntropyBackward(IDeviceApi device, DType dtype, DevicePtr logits, DevicePtr targets, DevicePtr logSumExp,
        DevicePtr counted, DevicePtr dLoss, DevicePtr dLogits, int rows, int vocabSize, int ignoreIndex = DefaultIgnoreIndex, DeviceStream stream = default)
    {
        LaunchArguments.Device(device);
        string kernel = KernelName.For("cross_entropy_backward", dtype, Supported);
        LaunchArguments.Pointer(logits, dtype, nameof(logits));
        LaunchArguments.Pointer(targets, DType.I32, nameof(targets));
        LaunchArguments.Pointer(logSumExp, DType.F32, nameof(logSumExp));
        LaunchArguments.Pointer(counted, DType.I32, nameof(counted));
        LaunchArguments.OptionalPointer(dLoss, DType.F32, nameof(dLoss));
        LaunchArguments.Pointer(dLogits, dtype, nameof(dLogits));
        CheckSizes(rows, vocabSize);
        if (rows == 0) return;
        nint* args = stackalloc nint[]
        {
            (nint)(&logits), (nint)(&targets), (nint)(&logSumExp), (nint)(&counted), (nint)(&dLoss), (nint)(&dLogits), (nint)(&rows),
            (nint)(&vocabSize), (nint)(&ignoreIndex),
        };
        long elements = (long)rows * vocabSize;
        // logits, targets, lse, counted and dLoss read; dLogits written. ~4 flops a logit.
        device.Launch(kernel, new Dim3((uint)rows), LaunchShape.RowBlock(vocabSize), 0, stream, new ReadOnlySpan<nint>(args, 9),
            new KernelCost(elements * dtype.SizeInBytes() + (long)rows * (sizeof(int) + sizeof(float)) + sizeof(int) + (dLoss.IsNull ? 0 : sizeof(float)),
                elements * dtype.SizeInBytes(), 0, 4 * elements));
    }

    private static void CheckSizes(int rows, int vocabSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(vocabSize);
    }
}
