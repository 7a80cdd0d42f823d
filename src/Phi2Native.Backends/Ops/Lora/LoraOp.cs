using Phi2Native.Autograd;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Cuda;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Lora;

/// <summary>
/// A LoRA Linear's branch added to its base output, as PEFT computes it: y = base + scaling * (dropout(x) A^T) B^T, with
/// x [..., in] and base [..., out] of one activation dtype and the adapter A [r, in], B [out, r] in fp32 (F64 beside an
/// F64 x). The dropout mask is <see cref="Dropout.DropoutOp"/>'s for the seed, regenerated wherever x is read; forward
/// saves only u = dropout(x) A^T [..., r]. Over a 16-bit base the sum is taken in fp32 and rounded once (LoraLinear's
/// AddUpdate). Backward: the base gets dY itself; dB += scaling dY^T u, dA += du^T dropout(x) with du = scaling dY B, and
/// dx = dropout'(du A) written (=), each only when needed. The contract is checked here, once (kernels/lora.cu).
/// </summary>
internal sealed class LoraOp : AutogradOp
{
    /// <summary>The op and the activation dtypes each backend computes it in.</summary>
    public static BackendOp Info { get; } = new("Lora", BackendOp.CpuFloats, [DType.F32, DType.BF16, DType.F16]);

    private readonly LoraBranch _branch;
    private readonly Tensor _u;

    private LoraOp(Tensor x, Tensor baseOutput, Tensor a, Tensor b, LoraBranch branch, Tensor u) : base(x, baseOutput, a, b) =>
        (_branch, _u) = (branch, u);

    /// <inheritdoc/>
    public override string Name => Info.Name;

    /// <summary>The branch added to <paramref name="baseOutput"/>, recorded on the tape.</summary>
    /// <exception cref="ArgumentException">Shapes, dtypes or backends break the contract.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The scaling is not finite, or the dropout not in [0, 1) (NaN included).</exception>
    public static Tensor Apply(Tensor x, Tensor baseOutput, Tensor a, Tensor b, LoraBranch branch)
    {
        var y = Forward(x, baseOutput, a, b, branch, out var u);
        return Record(new LoraOp(x, baseOutput, a, b, branch, u), y);
    }

    /// <summary>The forward alone: y like <paramref name="baseOutput"/>, and <paramref name="u"/> = dropout(x) A^T [..., r] in A's dtype.</summary>
    /// <exception cref="ArgumentException">Shapes, dtypes or backends break the contract.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The scaling is not finite, or the dropout not in [0, 1).</exception>
    public static Tensor Forward(Tensor x, Tensor baseOutput, Tensor a, Tensor b, LoraBranch branch, out Tensor u)
    {
        using var profile = ProfileScope.Op(Info.Name, x.Backend);
        var shape = Check(Info.Name, x, baseOutput, a, b, branch);
        switch (x.Backend)
        {
            case CpuBackend cpu: return CpuLora.Forward(cpu, x, baseOutput, a, b, branch, shape, out u);
            case CudaBackend cuda: return LoraKernels.Forward(cuda, x, baseOutput, a, b, branch, shape, out u);
            default: throw OpContract.NoImplementation(Info, x.Backend);
        }
    }

    /// <summary>
    /// The gradients alone: dx like x (=, or += with <paramref name="accumulateDx"/>), dA like A and dB like B (+=, or =
    /// where <paramref name="accumulateA"/>, <paramref name="accumulateB"/> are false: a gradient new this step, no zero
    /// fill before it), each null when not needed; u is the forward's. The base's gradient is dOutput itself (no work).
    /// </summary>
    /// <exception cref="ArgumentException">Shapes, dtypes or backends break the contract.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The scaling is not finite, or the dropout not in [0, 1).</exception>
    public static void Backward(Tensor dOutput, Tensor x, Tensor a, Tensor b, Tensor u, LoraBranch branch, Tensor? dx, Tensor? dA, Tensor? dB,
        bool accumulateDx = false, bool accumulateA = true, bool accumulateB = true)
    {
        using var profile = ProfileScope.BackwardOp(Info.Name, dOutput.Backend);
        const string op = "LoraBackward";
        var shape = Check(op, x, dOutput, a, b, branch);
        var backend = x.Backend;
        OpContract.OnBackend(u, backend, op, nameof(u));
        OpContract.Count(u, (long)shape.Rows * shape.Rank, op, nameof(u), $"[{shape.Rows}, {shape.Rank}]");
        OpContract.DType(u, a.DType, op, nameof(u));
        foreach (var (gradient, like, name) in new[] { (dx, x, nameof(dx)), (dA, a, nameof(dA)), (dB, b, nameof(dB)) })
        {
            if (gradient is null) continue;
            OpContract.OnBackend(gradient, backend, op, name);
            OpContract.Shape(gradient, like.Shape, op, name);
            OpContract.DType(gradient, like.DType, op, name);
        }
        if (dx is null && dA is null && dB is null) return;
        switch (backend)
        {
            case CpuBackend cpu: CpuLora.Backward(cpu, dOutput, x, a, b, u, branch, shape, dx, dA, dB, accumulateDx, accumulateA, accumulateB); break;
            case CudaBackend cuda: LoraKernels.Backward(cuda, dOutput, x, a, b, u, branch, shape, dx, dA, dB, accumulateDx, accumulateA, accumulateB); break;
            default: throw OpContract.NoImplementation(Info, backend);
        }
    }

    /// <inheritdoc/>
    protected internal override void Backward(Tensor dOutput, BackwardContext context)
    {
        var (x, baseOutput, a, b) = (Inputs[0]!, Inputs[1]!, Inputs[2]!, Inputs[3]!);
        // The branch's dx goes straight into x's gradient where one is pending; else it is written fresh and delivered,
        // and the base Linear (whose backward runs next) adds its dY W into it with beta 1: either way no temporary and
        // no add launch.
        var pending = context.PendingGradient(x);
        var dx = pending ?? context.NewGradient(x);
        var dA = context.GradientFor(a, out bool accumulateA);
        var dB = context.GradientFor(b, out bool accumulateB);
        Backward(dOutput, x, a, b, _u, _branch, dx, dA, dB, accumulateDx: pending is not null, accumulateA, accumulateB);
        if (pending is null) context.Deliver(x, dx);
        // A view, not a copy, as AddOp gives: the context never writes in place into a buffer two gradients share.
        if (baseOutput.RequiresGrad) context.Deliver(baseOutput, dOutput.Reshape(baseOutput.Shape.ToArray()));
    }

    /// <inheritdoc/>
    protected internal override void ReleaseSaved() => _u.Dispose();

    private static LoraShape Check(string op, Tensor x, Tensor output, Tensor a, Tensor b, LoraBranch branch)
    {
        var shape = CheckAdapter(op, x, a, b, branch);
        OpContract.OnBackend(output, x.Backend, op, "output");
        OpContract.Shape(output, [.. x.Shape[..^1], shape.Out], op, "output");
        OpContract.DType(output, x.DType, op, "output");
        return shape;
    }

    /// <summary>The contract of the branch alone (x, A, B and its constants), shared with the ops that fuse a LoRA branch.</summary>
    internal static LoraShape CheckAdapter(string op, Tensor x, Tensor a, Tensor b, LoraBranch branch)
    {
        OpContract.OnBackend(x, x?.Backend!, op, nameof(x));
        var backend = x!.Backend;
        Info.RequireSupported(x, nameof(x));
        OpContract.OnBackend(a, backend, op, nameof(a));
        OpContract.OnBackend(b, backend, op, nameof(b));
        OpContract.Rank(a, 2, op, nameof(a), "[r, in]");
        OpContract.Rank(b, 2, op, nameof(b), "[out, r]");
        int rank = a.Size(0), inFeatures = a.Size(1), outFeatures = b.Size(0);
        if (b.Size(1) != rank) throw new ArgumentException($"{op}: B [{b.ShapeText}] is not [out, {rank}], A's rank", nameof(b));
        if (rank == 0 || inFeatures == 0 || outFeatures == 0)
            throw new ArgumentException($"{op}: A [{a.ShapeText}] and B [{b.ShapeText}] need a rank, in- and out-features of at least 1", nameof(a));
        if (x.Rank == 0 || x.Size(-1) != inFeatures)
            throw new ArgumentException($"{op}: x [{x.ShapeText}] does not end in {inFeatures}, A's in-features", nameof(x));
        int rows = OpContract.Int(x.ElementCount / Math.Max(inFeatures, 1), op, "rows");
        var adapter = x.DType == DType.F64 ? DType.F64 : DType.F32;
        OpContract.DType(a, adapter, op, nameof(a));
        OpContract.DType(b, adapter, op, nameof(b));
        CheckBranch(branch);
        return new LoraShape(rows, inFeatures, outFeatures, rank);
    }

    /// <summary>A branch's constants: a finite scaling, a dropout probability in [0, 1) (NaN fails both).</summary>
    internal static void CheckBranch(LoraBranch branch, string name = "branch")
    {
        if (!double.IsFinite(branch.Scaling))
            throw new ArgumentOutOfRangeException(name, branch.Scaling, "the LoRA scaling must be finite");
        if (!NumberChecks.IsProbability(branch.Dropout))
            throw new ArgumentOutOfRangeException(name, branch.Dropout, "the LoRA dropout probability must be in [0, 1)");
    }
}
