using Phi2Native.Autograd;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Mlp;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Projection;

/// <summary>
/// y [..., out] = x [..., in] W^T + b, with W [out, in] as checkpoints store it; the bias is optional. Backward writes
/// dx = dY W (=) and accumulates dW += dY^T x and dBias += column sums of dY (+=), each optional: a frozen weight costs
/// no dW product, an input that needs no gradient no dx product. The contract is checked here, once.
/// </summary>
internal sealed class LinearOp : AutogradOp
{
    /// <summary>The op and the dtypes each backend computes it in (x, weight, bias and dx share one).</summary>
    public static BackendOp Info { get; } = new("Linear", BackendOp.CpuFloats, [DType.F32, DType.BF16, DType.F16]);

    private readonly Tensor _x, _weight;
    private readonly Tensor? _bias;

    private LinearOp(Tensor x, Tensor weight, Tensor? bias) : base(x, weight, bias) => (_x, _weight, _bias) = (x, weight, bias);

    /// <inheritdoc/>
    public override string Name => Info.Name;

    /// <summary>x W^T + b, recorded on the tape.</summary>
    public static Tensor Apply(Tensor x, Tensor weight, Tensor? bias) => Record(new LinearOp(x, weight, bias), Forward(x, weight, bias));

    /// <summary>The forward alone: y [..., out], accumulated in fp32 (F64 beside F64 x) and rounded once to x's dtype.</summary>
    /// <exception cref="ArgumentException">Shapes or dtypes break the contract; the message names the argument.</exception>
    /// <exception cref="NotSupportedException">The backend does not compute it in x's dtype.</exception>
    public static Tensor Forward(Tensor x, Tensor weight, Tensor? bias)
    {
        using var profile = ProfileScope.Op(Info.Name, x.Backend);
        var (rows, inFeatures, outFeatures) = CheckForward(x, weight, bias);
        return x.Backend switch
        {
            CpuBackend cpu => CpuLinear.Forward(cpu, x, weight, bias, rows, inFeatures, outFeatures),
            CudaBackend cuda => CudaLinear.Forward(cuda, x, weight, bias, rows, inFeatures, outFeatures),
            var other => throw OpContract.NoImplementation(Info, other),
        };
    }

    /// <summary>
    /// Inference only (never recorded): x W^T + b + <paramref name="residual"/> [..., out], the residual added by the
    /// product's own accumulation (beta = 1; cuBLASLt's C operand), so a residual sum costs no launch of its own. The sum
    /// is taken in fp32 with the bias and rounded once. <paramref name="inPlace"/> writes the result into the residual
    /// itself (and returns it); otherwise the residual is left as it was.
    /// </summary>
    /// <exception cref="ArgumentException">Shapes or dtypes break the contract; the message names the argument.</exception>
    public static Tensor ForwardAdding(Tensor x, Tensor weight, Tensor? bias, Tensor residual, bool inPlace)
    {
        using var profile = ProfileScope.Op(Info.Name, x.Backend);
        var (rows, inFeatures, outFeatures) = CheckForward(x, weight, bias);
        OpContract.OnBackend(residual, x.Backend, "Linear", nameof(residual));
        OpContract.Shape(residual, [.. x.Shape[..^1], outFeatures], "Linear", nameof(residual));
        OpContract.DType(residual, x.DType, "Linear", nameof(residual));
        return x.Backend switch
        {
            CpuBackend cpu => CpuLinear.ForwardAdding(cpu, x, weight, bias, residual, inPlace, rows, inFeatures, outFeatures),
            CudaBackend cuda => CudaLinear.ForwardAdding(cuda, x, weight, bias, residual, inPlace, rows, inFeatures, outFeatures),
            var other => throw OpContract.NoImplementation(Info, other),
        };
    }

    /// <summary>
    /// The gradients alone: dx (=) like x, or (+=) with <paramref name="accumulateDx"/>; dWeight [out, in] and dBias [out]
    /// (+=) of x's dtype, or F32 over a 16-bit x. A null output is not computed. With <paramref name="geluPreActivation"/>
    /// (like x; the CUDA backend only, GeluGradientFusion) dx is the gradient of the h that x = gelu_new(h) came from:
    /// dx = (dY W (+ dx)) gelu_new'(h), in the product's epilogue.
    /// </summary>
    /// <exception cref="ArgumentException">Shapes or dtypes break the contract; the message names the argument.</exception>
    /// <exception cref="NotSupportedException">A pre-activation on a backend other than CUDA.</exception>
    public static void Backward(Tensor dOutput, Tensor x, Tensor weight, Tensor? dx, Tensor? dWeight, Tensor? dBias, bool accumulateDx = false,
        Tensor? geluPreActivation = null)
    {
        using var profile = ProfileScope.BackwardOp(Info.Name, dOutput.Backend);
        var (rows, inFeatures, outFeatures) = CheckBackward(dOutput, x, weight, dx, dWeight, dBias);
        if (geluPreActivation is not null)
        {
            OpContract.OnBackend(geluPreActivation, x.Backend, "LinearBackward", nameof(geluPreActivation));
            OpContract.Count(geluPreActivation, x.ElementCount, "LinearBackward", nameof(geluPreActivation), $"like x [{x.ShapeText}]");
            OpContract.DType(geluPreActivation, x.DType, "LinearBackward", nameof(geluPreActivation));
        }
        switch (x.Backend)
        {
            case CpuBackend when geluPreActivation is not null:
                throw new NotSupportedException("LinearBackward: the gelu_new pre-activation epilogue runs on the CUDA backend only (GeluGradientFusion never asks the CPU)");
            case CpuBackend: CpuLinear.Backward(dOutput, x, weight, dx, dWeight, dBias, rows, inFeatures, outFeatures, accumulateDx); break;
            case CudaBackend cuda: CudaLinear.Backward(cuda, dOutput, x, weight, dx, dWeight, dBias, rows, inFeatures, outFeatures, accumulateDx, geluPreActivation); break;
            default: throw OpContract.NoImplementation(Info, x.Backend);
        }
    }

    /// <inheritdoc/>
    protected internal override void Backward(Tensor dOutput, BackwardContext context)
    {
        // Where x already has a gradient pending (its LoRA branch, or another Linear reading the same x, ran backward
        // first), the dx product adds into it (beta 1): no temporary, no add. Where x is fc1's gelu_new output and this is
        // its last contribution, the product also takes gelu_new's backward (GeluGradientFusion).
        var pending = context.PendingGradient(_x);
        var dx = pending ?? context.NewGradient(_x);
        var pre = dx is null ? null : GeluGradientFusion.PreActivationFor(context, _x, pending);
        Backward(dOutput, _x, _weight, dx, context.AccumulatorFor(_weight), context.AccumulatorFor(_bias), accumulateDx: pending is not null, pre);
        if (pending is null) context.Deliver(_x, dx);
        if (pre is not null) context.MarkThroughActivation(_x);
    }

    internal static (int Rows, int In, int Out) CheckForward(Tensor x, Tensor weight, Tensor? bias)
    {
        const string op = "Linear";
        OpContract.OnBackend(x, x?.Backend!, op, nameof(x));
        OpContract.OnBackend(weight, x!.Backend, op, nameof(weight));
        OpContract.OnBackendIfAny(bias, x.Backend, op, nameof(bias));
        Info.RequireSupported(x, nameof(x));
        OpContract.Rank(weight, 2, op, nameof(weight), "[out, in]");
        int outFeatures = weight.Size(0), inFeatures = weight.Size(1);
        if (x.Rank == 0 || x.Size(-1) != inFeatures)
            throw new ArgumentException($"{op}: x [{x.ShapeText}] does not end in {inFeatures}, the weight's in-features", nameof(x));
        OpContract.DType(weight, x.DType, op, nameof(weight));
        if (bias is not null)
        {
            OpContract.Vector(bias, outFeatures, op, nameof(bias));
            OpContract.DType(bias, x.DType, op, nameof(bias));
        }
        return (OpContract.Int(x.ElementCount / Math.Max(inFeatures, 1), op, "rows"), inFeatures, outFeatures);
    }

    internal static (int Rows, int In, int Out) CheckBackward(Tensor dOutput, Tensor x, Tensor weight, Tensor? dx, Tensor? dWeight, Tensor? dBias)
    {
        const string op = "LinearBackward";
        var (rows, inFeatures, outFeatures) = CheckForward(x, weight, null);
        var backend = x.Backend;
        OpContract.OnBackend(dOutput, backend, op, nameof(dOutput));
        OpContract.OnBackendIfAny(dx, backend, op, nameof(dx));
        OpContract.OnBackendIfAny(dWeight, backend, op, nameof(dWeight));
        OpContract.OnBackendIfAny(dBias, backend, op, nameof(dBias));
        OpContract.Count(dOutput, (long)rows * outFeatures, op, nameof(dOutput), $"[{rows}, {outFeatures}]");
        OpContract.DType(dOutput, x.DType, op, nameof(dOutput));
        if (dx is not null)
        {
            OpContract.Count(dx, x.ElementCount, op, nameof(dx), $"like x [{x.ShapeText}]");
            OpContract.DType(dx, x.DType, op, nameof(dx));
        }
        if (dWeight is not null)
        {
            OpContract.Shape(dWeight, weight.Shape, op, nameof(dWeight));
            OpContract.GradientDType(dWeight, x.DType, op, nameof(dWeight));
        }
        if (dBias is not null)
        {
            OpContract.Vector(dBias, outFeatures, op, nameof(dBias));
            OpContract.GradientDType(dBias, x.DType, op, nameof(dBias));
        }
        return (rows, inFeatures, outFeatures);
    }
}
