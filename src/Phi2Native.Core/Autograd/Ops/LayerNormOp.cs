using Phi2Native.Tensors;

namespace Phi2Native.Autograd.Ops;

/// <summary>LayerNorm over the last dimension of x [..., C]; saves mean and rstd [rows].</summary>
public sealed class LayerNormOp : AutogradOp
{
    private readonly Tensor _x, _weight, _bias;
    private readonly Tensor _mean, _rstd;

    private LayerNormOp(Tensor x, Tensor weight, Tensor bias, Tensor mean, Tensor rstd) : base(x, weight, bias) =>
        (_x, _weight, _bias, _mean, _rstd) = (x, weight, bias, mean, rstd);

    /// <inheritdoc/>
    public override string Name => "LayerNorm";

    /// <summary>Forward.</summary>
    public static Tensor Apply(Tensor x, Tensor weight, Tensor bias, double eps)
    {
        var y = x.Backend.LayerNorm(x, weight, bias, eps, out var mean, out var rstd);
        return Record(new LayerNormOp(x, weight, bias, mean, rstd), y);
    }

    /// <inheritdoc/>
    protected internal override void Backward(Tensor dOutput, BackwardContext context)
    {
        var dx = context.NewGradient(_x);
        _x.Backend.LayerNormBackward(dOutput, _x, _weight, _mean, _rstd, dx, context.AccumulatorFor(_weight), context.AccumulatorFor(_bias));
        context.Deliver(_x, dx);
    }

    /// <inheritdoc/>
    protected internal override void ReleaseSaved()
    {
        _mean.Dispose();
        _rstd.Dispose();
    }
}
