using Phi2Native.Tensors;

namespace Phi2Native.Autograd.Ops;

/// <summary>gelu_new(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), elementwise; saves x.</summary>
public sealed class GeluNewOp : AutogradOp
{
    private readonly Tensor _x;

    private GeluNewOp(Tensor x) : base(x) => _x = x;

    /// <inheritdoc/>
    public override string Name => "GeluNew";

    /// <summary>Forward.</summary>
    public static Tensor Apply(Tensor x) => Record(new GeluNewOp(x), x.Backend.GeluNew(x));

    /// <inheritdoc/>
    protected internal override void Backward(Tensor dOutput, BackwardContext context)
    {
        var dx = context.NewGradient(_x)!;
        _x.Backend.GeluNewBackward(dOutput, _x, dx);
        context.Deliver(_x, dx);
    }
}
