using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Loss;

/// <summary>Launchers for kernels/cross_entropy.cu (each kernel's contract is in its header), and <see cref="CrossEntropyOp"/> on the CUDA backend.</summary>
internal static unsafe class CrossEntropyKernels
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

    /// <summary>Launches cross_entropy.cu's cross_entropy_{dtype} (contract in its header); 0 rows launches nothing.</summary>
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

    /// <summary>Launches cross_entropy.cu's cross_entropy_sum_{dtype} (contract in its header): one block of <see cref="SumBlock"/> threads, also for 0 rows.</summary>
    /// <exception cref="ArgumentException">An unsupported dtype or a misaligned pointer.</exception>
    /// <exception cref="ArgumentNullException">A null pointer other than <paramref name="lossMean"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A negative row count or no vocabulary.</exception>
    public static void CrossEntropySum(IDeviceApi device, DType dtype, DevicePtr logits, DevicePtr targets, DevicePtr logSumExp,
        DevicePtr lossSum, DevicePtr lossMean, DevicePtr counted, int rows, int vocabSize, int ignoreIndex = DefaultIgnoreIndex,
        DeviceStream stream = default)
    {
        LaunchArguments.Device(device);
        string kernel = KernelName.For("cross_entropy_sum", dtype, Supported);
        LaunchSum(device, kernel, logits, dtype, nameof(logits), targets, logSumExp, lossSum, lossMean, counted, rows, vocabSize, ignoreIndex, stream);
    }

    // cross_entropy_sum and cross_entropy_picked_sum take the same arguments but their first: each row's target logit is
    // read from the logits [rows, V] (of the logits' dtype) or from the picked logits [rows] (F32).
    private static void LaunchSum(IDeviceApi device, string kernel, DevicePtr source, DType sourceType, string sourceName, DevicePtr targets,
        DevicePtr logSumExp, DevicePtr lossSum, DevicePtr lossMean, DevicePtr counted, int rows, int vocabSize, int ignoreIndex, DeviceStream stream)
    {
        LaunchArguments.Pointer(source, sourceType, sourceName);
        LaunchArguments.Pointer(targets, DType.I32, nameof(targets));
        LaunchArguments.Pointer(logSumExp, DType.F32, nameof(logSumExp));
        LaunchArguments.Pointer(lossSum, DType.F32, nameof(lossSum));
        LaunchArguments.OptionalPointer(lossMean, DType.F32, nameof(lossMean));
        LaunchArguments.Pointer(counted, DType.I32, nameof(counted));
        CheckSizes(rows, vocabSize);
        nint* args = stackalloc nint[]
        {
            (nint)(&source), (nint)(&targets), (nint)(&logSumExp), (nint)(&rows), (nint)(&vocabSize), (nint)(&ignoreIndex),
            (nint)(&lossSum), (nint)(&lossMean), (nint)(&counted),
        };
        // targets, lse and each counted row's target logit read (ignored rows read none: an upper bound); the sum, mean and count written.
        device.Launch(kernel, new Dim3(1), SumBlock, 0, stream, new ReadOnlySpan<nint>(args, 9),
            new KernelCost((long)rows * (sizeof(int) + sizeof(float) + sourceType.SizeInBytes()), sizeof(float) * (lossMean.IsNull ? 1 : 2) + sizeof(int), 0, 2L * rows));
    }

    /// <summary>Launches cross_entropy.cu's cross_entropy_backward_{dtype} (contract in its header); 0 rows launches nothing.</summary>
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

    /// <summary>Launches cross_entropy.cu's cross_entropy_chunk_{dtype} (contract in its header); 0 rows launches nothing.</summary>
    /// <exception cref="ArgumentException">An unsupported dtype or a misaligned pointer.</exception>
    /// <exception cref="ArgumentNullException">A null pointer.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A negative row count or count, or no vocabulary.</exception>
    public static void CrossEntropyChunk(IDeviceApi device, DType dtype, DevicePtr logits, DevicePtr targets, DevicePtr logSumExp, DevicePtr picked,
        int counted, int rows, int vocabSize, int ignoreIndex = DefaultIgnoreIndex, DeviceStream stream = default)
    {
        LaunchArguments.Device(device);
        string kernel = KernelName.For("cross_entropy_chunk", dtype, Supported);
        LaunchArguments.Pointer(logits, dtype, nameof(logits));
        LaunchArguments.Pointer(targets, DType.I32, nameof(targets));
        LaunchArguments.Pointer(logSumExp, DType.F32, nameof(logSumExp));
        LaunchArguments.Pointer(picked, DType.F32, nameof(picked));
        CheckSizes(rows, vocabSize);
        ArgumentOutOfRangeException.ThrowIfNegative(counted);
        if (rows == 0) return;
        nint* args = stackalloc nint[]
        {
            (nint)(&logits), (nint)(&targets), (nint)(&logSumExp), (nint)(&picked), (nint)(&counted), (nint)(&rows), (nint)(&vocabSize),
            (nint)(&ignoreIndex),
        };
        long elements = (long)rows * vocabSize;
        // Each logit read (twice: the lse pass, then the gradient pass; counted once as traffic) and written once; targets
        // read; lse and the picked logits written. ~8 flops a logit (the lse pass's 4, then subtract, exp, multiply).
        device.Launch(kernel, new Dim3((uint)rows), LaunchShape.RowBlock(vocabSize), 0, stream, new ReadOnlySpan<nint>(args, 8),
            new KernelCost(elements * dtype.SizeInBytes() + (long)rows * sizeof(int), elements * dtype.SizeInBytes() + 2L * rows * sizeof(float), 0, 8 * elements));
    }

    /// <summary>Launches cross_entropy.cu's cross_entropy_picked_sum (contract in its header): one block of <see cref="SumBlock"/> threads, also for 0 rows.</summary>
    /// <exception cref="ArgumentException">A misaligned pointer.</exception>
    /// <exception cref="ArgumentNullException">A null pointer other than <paramref name="lossMean"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A negative row count or no vocabulary.</exception>
    public static void CrossEntropyPickedSum(IDeviceApi device, DevicePtr picked, DevicePtr targets, DevicePtr logSumExp, DevicePtr lossSum,
        DevicePtr lossMean, DevicePtr counted, int rows, int vocabSize, int ignoreIndex = DefaultIgnoreIndex, DeviceStream stream = default)
    {
        LaunchArguments.Device(device);
        LaunchSum(device, "cross_entropy_picked_sum", picked, DType.F32, nameof(picked), targets, logSumExp, lossSum, lossMean, counted, rows, vocabSize,
            ignoreIndex, stream);
    }

    private static void CheckSizes(int rows, int vocabSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(vocabSize);
    }
}
