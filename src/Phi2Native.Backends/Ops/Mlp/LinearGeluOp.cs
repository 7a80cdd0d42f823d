using Phi2Native.Autograd;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Activation;
using Phi2Native.Backends.Ops.Projection;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Mlp;

/// <summary>
/// The MLP's first half as one op: y [..., out] = gelu_new(x [..., in] W^T + b), W [out, in], b [out] (Phi-2's fc1 and
/// its activation), with no separate activation pass on the CUDA backend. Forward saves the pre-activation
/// h = x W^T + b [..., out] (rounded to x's dtype, as an unfused Linear stores it) when a gradient will be wanted.
/// Backward: dh = dY * gelu_new'(h) and dBias += column sums of dh in one pass, then dx = dh W (=) and dW += dh^T x, each
/// optional as <see cref="LinearOp"/>'s. On the CPU backend it is exactly Linear then GeluNew, and their backward (the
/// reference, bit-equal to the unfused ops); on the CUDA backend see <see cref="LinearGeluKernels"/>. The contract is
/// <see cref="LinearOp"/>'s with a bias required, checked once, there.
/// </summary>
internal sealed class LinearGeluOp : AutogradOp, IGeluOutput
{
    /// <summary>The op and the dtypes each backend computes it in (x, weight, bias and dx share one).</summary>
    public static BackendOp Info { get; } = new("LinearGelu", BackendOp.CpuFloats, [DType.F32, DType.BF16, DType.F16]);

    private readonly Tensor _x, _weight, _bias;
    private readonly Tensor? _pre;

    private LinearGeluOp(Tensor x, Tensor weight, Tensor bias, Tensor? pre) : base(x, weight, bias) => (_x, _weight, _bias, _pre) = (x, weight, bias, pre);

    /// <inheritdoc/>
    public override string Name => Info.Name;

    /// <inheritdoc/>
    public Tensor? PreActivation => _pre;

    /// <summary>gelu_new(x W^T + b), recorded on the tape; the pre-activation is saved only when the op will be recorded.</summary>
    public static Tensor Apply(Tensor x, Tensor weight, Tensor bias)
    {
        bool recorded = GradientTape.Current != null && (x.RequiresGrad || weight.RequiresGrad || bias.RequiresGrad);
        var (y, pre) = Forward(x, weight, bias, savePre: recorded);
        return Record(new LinearGeluOp(x, weight, bias, pre), y);
    }

    /// <summary>The forward alone: y [..., out] of x's dtype, and the pre-activation h like y when <paramref name="savePre"/>.</summary>
    /// <exception cref="ArgumentException">Shapes or dtypes break the contract; the message names the argument.</exception>
    /// <exception cref="NotSupportedException">The backend does not compute it in x's dtype.</exception>
    public static (Tensor Y, Tensor? Pre) Forward(Tensor x, Tensor weight, Tensor bias, bool savePre)
    {
        using var profile = ProfileScope.Op(Info.Name, x.Backend);
        ArgumentNullException.ThrowIfNull(bias);
        var (rows, inFeatures, outFeatures) = LinearOp.CheckForward(x, weight, bias);
        Info.RequireSupported(x, nameof(x));
        return x.Backend switch
        {
            CpuBackend cpu => CpuLinearGelu.Forward(cpu, x, weight, bias, savePre, rows, inFeatures, outFeatures),
            CudaBackend cuda => LinearGeluKernels.Forward(cuda, x, weight, bias, rows, inFeatures, outFeatures, savePre),
            var other => throw OpContract.NoImplementation(Info, other),
        };
    }

    /// <summary>
    /// The gradients alone, from dOutput and the saved pre-activation (like y): dx (=) like x; dWeight [out, in] and
    /// dBias [out] (+=) of x's dtype, or F32 over a 16-bit x. A null output is not computed.
    /// </summary>
    /// <remarks>With <c>gradientIsPreActivation</c>, dOutput is already the pre-activation's gradient (the product that made
    /// it took gelu_new's backward: GeluGradientFusion; the CUDA backend only): no gelu backward here.</remarks>
    /// <exception cref="ArgumentException">Shapes or dtypes break the contract; the message names the argument.</exception>
    /// <exception cref="NotSupportedException"><paramref name="gradientIsPreActivation"/> on a backend other than CUDA.</exception>
    public static void Backward(Tensor dOutput, Tensor x, Tensor weight, Tensor pre, Tensor? dx, Tensor? dWeight, Tensor? dBias,
        bool gradientIsPreActivation = false)
    {
        using var profile = ProfileScope.BackwardOp(Info.Name, dOutput.Backend);
        const string op = "LinearGeluBackward";
        var (rows, inFeatures, outFeatures) = LinearOp.CheckBackward(dOutput, x, weight, dx, dWeight, dBias);
        OpContract.OnBackend(pre, x.Backend, op, nameof(pre));
        OpContract.Count(pre, (long)rows * outFeatures, op, nameof(pre), $"[{rows}, {outFeatures}]");
        OpContract.DType(pre, x.DType, op, nameof(pre));
        switch (x.Backend)
        {
            case CpuBackend when gradientIsPreActivation: throw GeluGradientFusion.CudaOnly(op);
            case CpuBackend cpu: CpuLinearGelu.Backward(cpu, dOutput, x, weight, pre, dx, dWeight, dBias, rows, inFeatures, outFeatures); break;
            case CudaBackend cuda: LinearGeluKernels.Backward(cuda, dOutput, x, weight, pre, dx, dWeight, dBias, rows, inFeatures, outFeatures, gradientIsPreActivation); break;
            default: throw OpContract.NoImplementation(Info, x.Backend);
        }
    }

    /// <inheritdoc/>
    protected internal override void Backward(Tensor dOutput, BackwardContext context)
    {
        var dx = context.NewGradient(_x);
        Backward(dOutput, _x, _weight, _pre!, dx, context.AccumulatorFor(_weight), context.AccumulatorFor(_bias), context.TakeThroughActivation(Output));
        context.Deliver(_x, dx);
    }

    /// <inheritdoc/>
    protected internal override void ReleaseSaved() => _pre?.Dispose();
}
