using Phi2Native.Autograd;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Cuda;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Normalization;

/// <summary>
/// LayerNorm over the last dimension of x [..., C] (input_layernorm, final_layernorm), torch.nn.LayerNorm's
/// semantics: biased variance, eps inside the square root; statistics in fp32 (F64 beside F64 inputs). Forward saves
/// mean and rstd [rows]; backward writes dx (=), or adds it (+=) to x's gradient already pending (the residual stream's:
/// no separate add), and accumulates dWeight, dBias (+=), each optional. The contract is
/// checked here, once; <see cref="CpuLayerNorm"/> and <see cref="LayerNormKernels"/> trust it.
/// </summary>
internal sealed class LayerNormOp : AutogradOp
{
    /// <summary>The op and the dtypes each backend computes it in (x, weight, bias and dx share one).</summary>
    public static BackendOp Info { get; } = new("LayerNorm", BackendOp.CpuFloats, [DType.F32, DType.BF16]);

    private readonly Tensor _x, _weight, _bias;
    private readonly Tensor _mean, _rstd;

    private LayerNormOp(Tensor x, Tensor weight, Tensor bias, Tensor mean, Tensor rstd) : base(x, weight, bias) =>
        (_x, _weight, _bias, _mean, _rstd) = (x, weight, bias, mean, rstd);

    /// <inheritdoc/>
    public override string Name => Info.Name;

    /// <summary>y = LayerNorm(x) * weight + bias, recorded on the tape.</summary>
    public static Tensor Apply(Tensor x, Tensor weight, Tensor bias, double eps)
    {
        var y = Forward(x, weight, bias, eps, out var mean, out var rstd);
        return Record(new LayerNormOp(x, weight, bias, mean, rstd), y);
    }

    /// <summary>The forward alone: y [..., C] like x; mean and rstd [rows] in fp32 (F64 beside F64 x).</summary>
    /// <exception cref="ArgumentException">Shapes or dtypes break the contract; the message names the argument.</exception>
    /// <exception cref="ArgumentOutOfRangeException">eps is negative or NaN.</exception>
    /// <exception cref="NotSupportedException">The backend does not compute LayerNorm in x's dtype.</exception>
    public static Tensor Forward(Tensor x, Tensor weight, Tensor bias, double eps, out Tensor mean, out Tensor rstd)
    {
        using var profile = ProfileScope.Op(Info.Name, x.Backend);
        var (rows, channels) = CheckForward(x, weight, bias, eps);
        switch (x.Backend)
        {
            case CpuBackend cpu: return CpuLayerNorm.Forward(cpu, x, weight, bias, eps, rows, channels, out mean, out rstd);
            case CudaBackend cuda: return LayerNormKernels.Forward(cuda, x, weight, bias, eps, rows, channels, out mean, out rstd);
            default: throw OpContract.NoImplementation(Info, x.Backend);
        }
    }

    /// <summary>
    /// The gradients: with xhat = (x - mean) * rstd and g = dOutput * weight, dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
    /// (=, or += with <paramref name="accumulateDx"/>), dWeight += sum over rows of dOutput * xhat, dBias += sum over rows of
    /// dOutput. A null output is not computed.
    /// </summary>
    /// <exception cref="ArgumentException">Shapes or dtypes break the contract, or accumulateDx without dx; the message names the argument.</exception>
    public static void Backward(Tensor dOutput, Tensor x, Tensor weight, Tensor mean, Tensor rstd, Tensor? dx, Tensor? dWeight, Tensor? dBias,
        bool accumulateDx = false)
    {
        using var profile = ProfileScope.BackwardOp(Info.Name, dOutput.Backend);
        var (rows, channels) = CheckBackward(dOutput, x, weight, mean, rstd, dx, dWeight, dBias);
        if (accumulateDx && dx is null) throw new ArgumentException("LayerNormBackward: accumulateDx adds to dx, which is null", nameof(accumulateDx));
        switch (x.Backend)
        {
            case CpuBackend cpu: CpuLayerNorm.Backward(cpu, dOutput, x, weight, mean, rstd, dx, dWeight, dBias, rows, channels, accumulateDx); break;
            case CudaBackend cuda: LayerNormKernels.Backward(cuda, dOutput, x, weight, mean, rstd, dx, dWeight, dBias, rows, channels, accumulateDx); break;
            default: throw OpContract.NoImplementation(Info, x.Backend);
        }
    }

    /// <inheritdoc/>
    protected internal override void Backward(Tensor dOutput, BackwardContext context)
    {
        // In a decoder layer x (the residual stream) already has the parallel block's gradient: dx is added to it.
        var pending = context.PendingGradient(_x);
        var dx = pending ?? context.NewGradient(_x);
        Backward(dOutput, _x, _weight, _mean, _rstd, dx, context.AccumulatorFor(_weight), context.AccumulatorFor(_bias), accumulateDx: pending is not null);
        if (pending is null) context.Deliver(_x, dx);
    }

    /// <inheritdoc/>
    protected internal override void ReleaseSaved()
    {
        _mean.Dispose();
        _rstd.Dispose();
    }

    private static (int Rows, int Channels) CheckForward(Tensor x, Tensor weight, Tensor bias, double eps)
    {
        const string op = "LayerNorm";
        OpContract.OnBackend(x, x?.Backend!, op, nameof(x));
        OpContract.OnBackend(weight, x!.Backend, op, nameof(weight));
        OpContract.OnBackend(bias, x.Backend, op, nameof(bias));
        Info.RequireSupported(x, nameof(x));
        if (x.Rank == 0) throw new ArgumentException($"{op}: x must have a channel dimension, got a scalar", nameof(x));
        int channels = x.Size(-1);
        OpContract.Vector(weight, channels, op, nameof(weight));
        OpContract.Vector(bias, channels, op, nameof(bias));
        OpContract.DType(weight, x.DType, op, nameof(weight));
        OpContract.DType(bias, x.DType, op, nameof(bias));
        if (!(eps >= 0)) throw new ArgumentOutOfRangeException(nameof(eps), eps, $"{op}: eps must be >= 0");
        return (OpContract.Int(x.ElementCount / Math.Max(channels, 1), op, "rows"), channels);
    }

    private static (int Rows, int Channels) CheckBackward(Tensor dOutput, Tensor x, Tensor weight, Tensor mean, Tensor rstd,
        Tensor? dx, Tensor? dWeight, Tensor? dBias)
    {
        const string op = "LayerNormBackward";
        OpContract.OnBackend(x, x?.Backend!, op, nameof(x));
        var backend = x!.Backend;
        foreach (var (tensor, name) in new[] { (dOutput, nameof(dOutput)), (weight, nameof(weight)), (mean, nameof(mean)), (rstd, nameof(rstd)) })
            OpContract.OnBackend(tensor, backend, op, name);
        foreach (var (tensor, name) in new[] { (dx, nameof(dx)), (dWeight, nameof(dWeight)), (dBias, nameof(dBias)) })
            OpContract.OnBackendIfAny(tensor, backend, op, name);
        Info.RequireSupported(x, nameof(x));
        if (x.Rank == 0) throw new ArgumentException($"{op}: x must have a channel dimension, got a scalar", nameof(x));
        int channels = x.Size(-1);
        int rows = OpContract.Int(x.ElementCount / Math.Max(channels, 1), op, "rows");
        string like = $"like x [{x.ShapeText}]";
        OpContract.Count(dOutput, x.ElementCount, op, nameof(dOutput), like);
        OpContract.DType(dOutput, x.DType, op, nameof(dOutput));
        OpContract.Vector(weight, channels, op, nameof(weight));
        OpContract.DType(weight, x.DType, op, nameof(weight));
        var statistics = x.DType == DType.F64 ? DType.F64 : DType.F32;
        foreach (var (statistic, name) in new[] { (mean, nameof(mean)), (rstd, nameof(rstd)) })
        {
            OpContract.Count(statistic, rows, op, name, $"one per row, {rows}");
            OpContract.DType(statistic, statistics, op, name);
        }
        if (dx is not null)
        {
            OpContract.Count(dx, x.ElementCount, op, nameof(dx), like);
            OpContract.DType(dx, x.DType, op, nameof(dx));
        }
        foreach (var (gradient, name) in new[] { (dWeight, nameof(dWeight)), (dBias, nameof(dBias)) })
        {
            if (gradient is null) continue;
            OpContract.Vector(gradient, channels, op, name);
            OpContract.GradientDType(gradient, x.DType, op, name);
        }
        return (rows, channels);
    }
}
