using Phi2Native.Autograd;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Residual;

/// <summary>
/// Phi-2's parallel block sum, y = (dropout(attention) + dropout(mlp)) + hidden in HF's order, in one pass
/// (kernels/residual.cu): each branch keeps its own dropout seed and DropoutMask's rule, so in F32 the result equals the
/// unfused dropouts and adds bit for bit. Backward gives hidden the output's gradient itself and both branches theirs
/// from one pass over it. The contract is checked here, once.
/// </summary>
internal sealed class ParallelResidualOp : AutogradOp
{
    /// <summary>The op and the dtypes each backend computes it in.</summary>
    public static BackendOp Info { get; } = new("ParallelResidual", BackendOp.CpuFloats, [DType.F32, DType.BF16, DType.F16]);

    private readonly double _dropout;
    private readonly ulong _attentionSeed, _mlpSeed;

    private ParallelResidualOp(Tensor attention, Tensor mlp, Tensor hidden, double dropout, ulong attentionSeed, ulong mlpSeed)
        : base(attention, mlp, hidden) => (_dropout, _attentionSeed, _mlpSeed) = (dropout, attentionSeed, mlpSeed);

    /// <inheritdoc/>
    public override string Name => Info.Name;

    /// <summary>The sum, recorded on the tape.</summary>
    /// <exception cref="ArgumentException">The three are not alike in shape, dtype and backend.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="dropout"/> is not in [0, 1) (NaN included).</exception>
    public static Tensor Apply(Tensor attention, Tensor mlp, Tensor hidden, double dropout, ulong attentionSeed, ulong mlpSeed) =>
        Record(new ParallelResidualOp(attention, mlp, hidden, dropout, attentionSeed, mlpSeed), Forward(attention, mlp, hidden, dropout, attentionSeed, mlpSeed));

    /// <summary>The forward alone: y [like hidden].</summary>
    /// <exception cref="ArgumentException">The three are not alike in shape, dtype and backend.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="dropout"/> is not in [0, 1).</exception>
    public static Tensor Forward(Tensor attention, Tensor mlp, Tensor hidden, double dropout, ulong attentionSeed, ulong mlpSeed)
    {
        Check(Info.Name, (hidden, nameof(hidden)), (attention, nameof(attention)), (mlp, nameof(mlp)));
        CheckProbability(dropout);
        return hidden.Backend switch
        {
            CpuBackend cpu => CpuParallelResidual.Forward(cpu, attention, mlp, hidden, dropout, attentionSeed, mlpSeed),
            CudaBackend cuda => ParallelResidualKernels.Forward(cuda, attention, mlp, hidden, dropout, attentionSeed, mlpSeed),
            var other => throw OpContract.NoImplementation(Info, other),
        };
    }

    /// <summary>The branches' gradients alone, written (=): each is dOutput through its branch's mask; either may be null.</summary>
    /// <exception cref="ArgumentException">A gradient not alike dOutput.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="dropout"/> is not in [0, 1).</exception>
    public static void Backward(Tensor dOutput, Tensor? dAttention, Tensor? dMlp, double dropout, ulong attentionSeed, ulong mlpSeed)
    {
        const string op = "ParallelResidualBackward";
        Check(op, (dOutput, nameof(dOutput)), (dAttention, nameof(dAttention)), (dMlp, nameof(dMlp)));
        CheckProbability(dropout);
        if (dAttention is null && dMlp is null) return;
        switch (dOutput.Backend)
        {
            case CpuBackend: CpuParallelResidual.Backward(dOutput, dAttention, dMlp, dropout, attentionSeed, mlpSeed); break;
            case CudaBackend cuda: ParallelResidualKernels.Backward(cuda, dOutput, dAttention, dMlp, dropout, attentionSeed, mlpSeed); break;
            default: throw OpContract.NoImplementation(Info, dOutput.Backend);
        }
    }

    /// <inheritdoc/>
    protected internal override void Backward(Tensor dOutput, BackwardContext context)
    {
        var (attention, mlp, hidden) = (Inputs[0]!, Inputs[1]!, Inputs[2]!);
        // hidden's gradient is dOutput itself (a view, as AddOp gives); without dropout the branches' are too.
        if (hidden.RequiresGrad) context.Deliver(hidden, dOutput.Reshape(hidden.Shape.ToArray()));
        if (_dropout == 0)
        {
            foreach (var branch in new[] { attention, mlp })
                if (branch.RequiresGrad) context.Deliver(branch, dOutput.Reshape(branch.Shape.ToArray()));
            return;
        }
        var dAttention = context.NewGradient(attention);
        var dMlp = context.NewGradient(mlp);
        Backward(dOutput, dAttention, dMlp, _dropout, _attentionSeed, _mlpSeed);
        context.Deliver(attention, dAttention);
        context.Deliver(mlp, dMlp);
    }

    private static void Check(string op, (Tensor Tensor, string Name) like, params (Tensor? Tensor, string Name)[] others)
    {
        var first = like.Tensor;
        OpContract.OnBackend(first, first?.Backend!, op, like.Name);
        Info.RequireSupported(first!, like.Name);
        foreach (var (tensor, name) in others)
        {
            if (tensor is null) continue;
            OpContract.OnBackend(tensor, first!.Backend, op, name);
            OpContract.Shape(tensor, first.Shape, op, name);
            OpContract.DType(tensor, first.DType, op, name);
        }
    }

    private static void CheckProbability(double dropout)
    {
        if (!NumberChecks.IsProbability(dropout))
            throw new ArgumentOutOfRangeException(nameof(dropout), dropout, "the dropout probability must lie in [0, 1)");
    }

}
