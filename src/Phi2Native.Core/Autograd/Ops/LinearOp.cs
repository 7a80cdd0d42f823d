using Phi2Native.Tensors;

namespace Phi2Native.Autograd.Ops;

/// <summary>y [..., out] = x [..., in] W^T + b, with W [out, in] as checkpoints store it; the bias is optional.</summary>
public sealed class LinearOp : AutogradOp
{
    private readonly Tensor _x, _weight;
    private readonly Tensor? _bias;

    private LinearOp(Tensor x, Tensor weight, Tensor? bias) : base(x, weight, bias) => (_x, _weight, _bias) = (x, weight, bias);

    /// <inheritdoc/>
    public override string Name => "Linear";

    /// <summary>Forward.</summary>
    public static Tensor Apply(Tensor x, Tensor weight, Tensor? bias) =>
        Record(new LinearOp(x, weight, bias), x.Backend.Linear(x, weight, bias));

    /// <inheritdoc/>
    protected internal override void Backward(Tensor dOutput, BackwardContext context)
    {
        // A frozen weight costs no dW product, and an input that needs no gradient no dx product.
        var dx = context.NewGradient(_x);
        _x.Backend.LinearBackward(dOutput, _x, _weight, dx, context.AccumulatorFor(_weight), context.AccumulatorFor(_bias));
        context.Deliver(_x, dx);
    }
}
