using Phi2Native.Autograd;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Cuda;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Loss;

/// <summary>
/// The causal-LM loss: the mean cross-entropy of logits [N, V] against targets [N] (I32) over the rows whose target is
/// not the ignore index; 0, with a zero gradient, when every row is ignored. Forward gives the mean loss [1], the
/// per-row log-sum-exp [N] it saves, and the count of rows that counted [1] (I32), all in device memory: nothing is
/// read back, and backward reads the count and dLoss on the device too. Targets come from the host, which checks them
/// before upload (Phi2Model.CausalLanguageModelLoss); the CPU backend checks them again for free, and the CUDA kernels
/// give a bad one's row NaN. The contract is checked here, once.
/// </summary>
internal sealed class CrossEntropyOp : AutogradOp
{
    /// <summary>The op and the dtypes each backend computes it in (the logits'; the loss is F32, F64 beside F64 logits).</summary>
    public static BackendOp Info { get; } = new("CrossEntropy", BackendOp.CpuFloats, [DType.F32, DType.BF16]);

    /// <summary>The target value that marks a row as excluded from the loss (PyTorch's default).</summary>
    public const int DefaultIgnoreIndex = -100;

    private readonly Tensor _logits, _targets, _logSumExp, _counted;
    private readonly int _ignoreIndex;

    private CrossEntropyOp(Tensor logits, Tensor targets, Tensor logSumExp, Tensor counted, int ignoreIndex) : base(logits) =>
        (_logits, _targets, _logSumExp, _counted, _ignoreIndex) = (logits, targets, logSumExp, counted, ignoreIndex);

    /// <inheritdoc/>
    public override string Name => Info.Name;

    /// <summary>The mean loss [1], recorded on the tape (the gradient flows to the logits).</summary>
    public static Tensor Apply(Tensor logits, Tensor targets, int ignoreIndex = DefaultIgnoreIndex)
    {
        var loss = Forward(logits, targets, ignoreIndex, out var logSumExp, out var counted);
        return Record(new CrossEntropyOp(logits, targets, logSumExp, counted, ignoreIndex), loss);
    }

    /// <summary>
    /// The forward alone: the mean loss [1] (the double sum in row order, rounded once, times (float)(1 / counted));
    /// <paramref name="logSumExp"/> [N] and <paramref name="counted"/> [1] (I32) for backward.
    /// </summary>
    /// <exception cref="ArgumentException">logits are not [N, V] with V &gt; 0, or targets not [N] I32.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A target is outside [0, V) and not the ignore index (the CPU backend only; see the class).</exception>
    public static Tensor Forward(Tensor logits, Tensor targets, int ignoreIndex, out Tensor logSumExp, out Tensor counted)
    {
        using var profile = ProfileScope.Op(Info.Name, logits.Backend);
        var (rows, vocab) = Check("CrossEntropy", logits, targets);
        switch (logits.Backend)
        {
            case CpuBackend cpu: return CpuCrossEntropy.Forward(cpu, logits, targets, ignoreIndex, rows, vocab, out logSumExp, out counted);
            case CudaBackend cuda: return CrossEntropyKernels.Forward(cuda, logits, targets, ignoreIndex, rows, vocab, out logSumExp, out counted);
            default: throw OpContract.NoImplementation(Info, logits.Backend);
        }
    }

    /// <summary>
    /// The gradient alone: dLogits (=) = dLoss / counted * (softmax(logits) - onehot(targets)) on counted rows, 0 on
    /// ignored ones, with the scale (float)(1 / counted) * dLoss taken in fp32 on the device. A null dLoss is 1.
    /// </summary>
    /// <exception cref="ArgumentException">Shapes or dtypes break the contract.</exception>
    public static void Backward(Tensor logits, Tensor targets, Tensor logSumExp, Tensor counted, Tensor? dLoss, int ignoreIndex, Tensor dLogits)
    {
        using var profile = ProfileScope.BackwardOp(Info.Name, logits.Backend);
        const string op = "CrossEntropyBackward";
        var (rows, _) = Check(op, logits, targets);
        var backend = logits.Backend;
        var statistics = logits.DType == DType.F64 ? DType.F64 : DType.F32;
        OpContract.OnBackend(logSumExp, backend, op, nameof(logSumExp));
        OpContract.Count(logSumExp, rows, op, nameof(logSumExp), $"one per row, {rows}");
        OpContract.DType(logSumExp, statistics, op, nameof(logSumExp));
        OpContract.OnBackend(counted, backend, op, nameof(counted));
        OpContract.Count(counted, 1, op, nameof(counted), "one count");
        OpContract.DType(counted, DType.I32, op, nameof(counted));
        if (dLoss is not null)
        {
            OpContract.OnBackend(dLoss, backend, op, nameof(dLoss));
            OpContract.Count(dLoss, 1, op, nameof(dLoss), "the loss's gradient");
            OpContract.DType(dLoss, statistics, op, nameof(dLoss));
        }
        OpContract.OnBackend(dLogits, backend, op, nameof(dLogits));
        OpContract.Count(dLogits, logits.ElementCount, op, nameof(dLogits), $"like logits [{logits.ShapeText}]");
        OpContract.DType(dLogits, logits.DType, op, nameof(dLogits));
        switch (backend)
        {
            case CpuBackend: CpuCrossEntropy.Backward(logits, targets, logSumExp, counted, dLoss, ignoreIndex, dLogits); break;
            case CudaBackend cuda: CrossEntropyKernels.Backward(cuda, logits, targets, logSumExp, counted, dLoss, ignoreIndex, dLogits); break;
            default: throw OpContract.NoImplementation(Info, backend);
        }
    }

    /// <inheritdoc/>
    protected internal override void Backward(Tensor dOutput, BackwardContext context)
    {
        var dLogits = context.NewGradient(_logits)!;
        Backward(_logits, _targets, _logSumExp, _counted, dOutput, _ignoreIndex, dLogits);
        context.Deliver(_logits, dLogits);
    }

    /// <inheritdoc/>
    protected internal override void ReleaseSaved()
    {
        _logSumExp.Dispose();
        _counted.Dispose();
    }

    private static (int Rows, int Vocab) Check(string op, Tensor logits, Tensor targets)
    {
        OpContract.OnBackend(logits, logits?.Backend!, op, nameof(logits));
        OpContract.OnBackend(targets, logits!.Backend, op, nameof(targets));
        Info.RequireSupported(logits, nameof(logits));
        OpContract.Rank(logits, 2, op, nameof(logits), "[N, V]");
        int rows = logits.Size(0), vocab = logits.Size(1);
        if (vocab <= 0) throw new ArgumentException($"{op}: logits [{logits.ShapeText}] have no vocabulary", nameof(logits));
        OpContract.DType(targets, DType.I32, op, nameof(targets));
        OpContract.Count(targets, rows, op, nameof(targets), $"one per row of logits, {rows}");
        return (rows, vocab);
    }
}
