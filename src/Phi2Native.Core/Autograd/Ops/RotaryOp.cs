using Phi2Native.Tensors;

namespace Phi2Native.Autograd.Ops;

/// <summary>Partial rotary position embedding (half-split) of x [B, T, H, D] on dims [0, rotaryDim) of each head.</summary>
public sealed class RotaryOp : AutogradOp
{
    private readonly Tensor _x;
    private readonly int _rotaryDim, _positionOffset;
    private readonly double _theta;

    private RotaryOp(Tensor x, int rotaryDim, double theta, int positionOffset) : base(x) =>
        (_x, _rotaryDim, _theta, _positionOffset) = (x, rotaryDim, theta, positionOffset);

    /// <inheritdoc/>
    public override string Name => "Rotary";

    /// <summary>Forward; position of time step t is positionOffset + t.</summary>
    public static Tensor Apply(Tensor x, int rotaryDim, double theta, int positionOffset = 0) =>
        Record(new RotaryOp(x, rotaryDim, theta, positionOffset), x.Backend.Rotary(x, rotaryDim, theta, positionOffset));

    /// <inheritdoc/>
    protected internal override void Backward(Tensor dOutput, BackwardContext context)
    {
        var dx = context.NewGradient(_x)!;
        _x.Backend.RotaryBackward(dOutput, dx, _rotaryDim, _theta, _positionOffset);
        context.Deliver(_x, dx);
    }
}
