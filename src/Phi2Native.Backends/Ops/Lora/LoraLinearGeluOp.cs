using Phi2Native.Autograd;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Mlp;
using Phi2Native.Backends.Ops.Projection;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Lora;

/// <summary>
/// fc1 with a LoRA adapter and its activation as one op: y = gelu_new(pre), pre = x W^T + b + scaling (dropout(x) A^T) B^T
/// [..., out], the low-rank product added before gelu_new as PEFT computes it (Phi2Mlp's fc1 and its act). Forward saves
/// u = dropout(x) A^T [..., r] and the pre-activation (rounded to x's dtype, as the unfused Lora op stores it) when a
/// gradient will be wanted. Backward: dh = dY gelu_new'(pre) (and dBias += its column sums), then the branch from dh (dB,
/// dA, its dx) and the base's dx = dh W added into the same buffer, dW += dh^T x: each only where needed. On the CPU
/// backend exactly Linear, Lora, GeluNew and their backward (the reference, bit-equal to the unfused ops); on the CUDA
/// backend 3 launches forward and no gelu_new launch (<see cref="LoraLinearGeluKernels"/>). The contracts are
/// <see cref="LinearOp"/>'s (a bias required) and <see cref="LoraOp"/>'s, checked once, here.
/// </summary>
internal sealed class LoraLinearGeluOp : AutogradOp, IGeluOutput
{
    /// <summary>The op and the activation dtypes each backend computes it in (the adapter always fp32, or F64 beside F64).</summary>
    public static BackendOp Info { get; } = new("LoraLinearGelu", BackendOp.CpuFloats, [DType.F32, DType.BF16, DType.F16]);

    private readonly Tensor _x, _weight, _bias, _a, _b;
    private readonly LoraBranch _branch;
    private readonly Tensor _u;
    private readonly Tensor? _pre;

    private LoraLinearGeluOp(Tensor x, Tensor weight, Tensor bias, Tensor a, Tensor b, LoraBranch branch, Tensor u, Tensor? pre)
        : base(x, weight, bias, a, b) => (_x, _weight, _bias, _a, _b, _branch, _u, _pre) = (x, weight, bias, a, b, branch, u, pre);

    /// <inheritdoc/>
    public override string Name => Info.Name;

    /// <inheritdoc/>
    public Tensor? PreActivation => _pre;

    /// <summary>gelu_new(x W^T + b + the branch), recorded on the tape; the pre-activation is saved only when the op will be recorded.</summary>
    /// <exception cref="ArgumentException">Shapes, dtypes or backends break the contract.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The scaling is not finite, or the dropout not in [0, 1) (NaN included).</exception>
    public static Tensor Apply(Tensor x, Tensor weight, Tensor bias, Tensor a, Tensor b, LoraBranch branch)
    {
        bool recorded = GradientTape.Current != null && (x.RequiresGrad || weight.RequiresGrad || bias.RequiresGrad || a.RequiresGrad || b.RequiresGrad);
        var (y, pre, u) = Forward(x, weight, bias, a, b, branch, savePre: recorded);
        return Record(new LoraLinearGeluOp(x, weight, bias, a, b, branch, u, pre), y);
    }

    /// <summary>The forward alone: y [..., out] of x's dtype, the pre-activation like y when <paramref name="savePre"/>, and u [..., r] in A's dtype.</summary>
    /// <exception cref="ArgumentException">Shapes, dtypes or backends break the contract.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The scaling is not finite, or the dropout not in [0, 1).</exception>
    /// <exception cref="NotSupportedException">The backend does not compute it in x's dtype.</exception>
    public static (Tensor Y, Tensor? Pre, Tensor U) Forward(Tensor x, Tensor weight, Tensor bias, Tensor a, Tensor b, LoraBranch branch, bool savePre)
    {
        using var profile = ProfileScope.Op(Info.Name, x.Backend);
        var shape = Check(Info.Name, x, weight, bias, a, b, branch);
        return x.Backend switch
        {
            CpuBackend cpu => CpuLoraLinearGelu.Forward(cpu, x, weight, bias, a, b, branch, shape, savePre),
            CudaBackend cuda => LoraLinearGeluKernels.Forward(cuda, x, weight, bias, a, b, branch, shape, savePre),
            var other => throw OpContract.NoImplementation(Info, other),
        };
    }

    /// <summary>
    /// The gradients alone, from dOutput and the saved pre-activation and u: dx like x (=, or += with
    /// <paramref name="accumulateDx"/>); dWeight, dBias (x's dtype, or F32 over a 16-bit x), dA and dB (+=, or = where
    /// <paramref name="accumulateA"/>, <paramref name="accumulateB"/> are false); a null one is not computed.
    /// </summary>
    /// <exception cref="ArgumentException">Shapes, dtypes or backends break the contract.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The scaling is not finite, or the dropout not in [0, 1).</exception>
    /// <remarks>With <c>gradientIsPreActivation</c>, dOutput is already the pre-activation's gradient (GeluGradientFusion; the CUDA backend only).</remarks>
    public static void Backward(Tensor dOutput, Tensor x, Tensor weight, Tensor a, Tensor b, Tensor u, Tensor pre, LoraBranch branch,
        Tensor? dx, Tensor? dWeight, Tensor? dBias, Tensor? dA, Tensor? dB, bool accumulateDx = false, bool gradientIsPreActivation = false,
        bool accumulateA = true, bool accumulateB = true)
    {
        using var profile = ProfileScope.BackwardOp(Info.Name, dOutput.Backend);
        const string op = "LoraLinearGeluBackward";
        var (rows, _, outFeatures) = LinearOp.CheckBackward(dOutput, x, weight, dx, dWeight, dBias);
        var shape = LoraOp.CheckAdapter(op, x, a, b, branch);
        if (shape.Out != outFeatures) throw new ArgumentException($"{op}: B [{b.ShapeText}] does not have the weight's {outFeatures} out-features", nameof(b));
        var backend = x.Backend;
        OpContract.OnBackend(pre, backend, op, nameof(pre));
        OpContract.Count(pre, (long)rows * outFeatures, op, nameof(pre), $"[{rows}, {outFeatures}]");
        OpContract.DType(pre, x.DType, op, nameof(pre));
        OpContract.OnBackend(u, backend, op, nameof(u));
        OpContract.Count(u, (long)rows * shape.Rank, op, nameof(u), $"[{rows}, {shape.Rank}]");
        OpContract.DType(u, a.DType, op, nameof(u));
        foreach (var (gradient, like, name) in new[] { (dA, a, nameof(dA)), (dB, b, nameof(dB)) })
        {
            if (gradient is null) continue;
            OpContract.OnBackend(gradient, backend, op, name);
            OpContract.Shape(gradient, like.Shape, op, name);
            OpContract.DType(gradient, like.DType, op, name);
        }
        switch (backend)
        {
            case CpuBackend when gradientIsPreActivation: throw GeluGradientFusion.CudaOnly(op);
            case CpuBackend cpu: CpuLoraLinearGelu.Backward(cpu, dOutput, x, weight, a, b, u, pre, branch, shape, dx, dWeight, dBias, dA, dB, accumulateDx, accumulateA,
                accumulateB); break;
            case CudaBackend cuda:
                LoraLinearGeluKernels.Backward(cuda, dOutput, x, weight, a, b, u, pre, branch, shape, dx, dWeight, dBias, dA, dB, accumulateDx, gradientIsPreActivation,
                    accumulateA, accumulateB);
                break;
            default: throw OpContract.NoImplementation(Info, backend);
        }
    }

    /// <inheritdoc/>
    protected internal override void Backward(Tensor dOutput, BackwardContext context)
    {
        var pending = context.PendingGradient(_x);
        var dx = pending ?? context.NewGradient(_x);
        var dA = context.GradientFor(_a, out bool accumulateA);
        var dB = context.GradientFor(_b, out bool accumulateB);
        Backward(dOutput, _x, _weight, _a, _b, _u, _pre!, _branch, dx, context.AccumulatorFor(_weight), context.AccumulatorFor(_bias), dA, dB,
            accumulateDx: pending is not null, context.TakeThroughActivation(Output), accumulateA, accumulateB);
        if (pending is null) context.Deliver(_x, dx);
    }

    /// <inheritdoc/>
    protected internal override void ReleaseSaved()
    {
        _u.Dispose();
        _pre?.Dispose();
    }

    private static LoraShape Check(string op, Tensor x, Tensor weight, Tensor bias, Tensor a, Tensor b, LoraBranch branch)
    {
        ArgumentNullException.ThrowIfNull(bias);
        var (_, _, outFeatures) = LinearOp.CheckForward(x, weight, bias);
        Info.RequireSupported(x, nameof(x));
        var shape = LoraOp.CheckAdapter(op, x, a, b, branch);
        if (shape.Out != outFeatures) throw new ArgumentException($"{op}: B [{b.ShapeText}] does not have the weight's {outFeatures} out-features", nameof(b));
        return shape;
    }
}
