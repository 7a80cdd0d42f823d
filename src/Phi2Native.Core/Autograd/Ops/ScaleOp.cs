using Phi2Native.Tensors;

namespace Phi2Native.Autograd.Ops;

/// <summary>y = factor * x with a constant factor (LoRA's alpha / r); the gradient is scaled alike.</summary>
internal sealed class ScaleOp : AutogradOp
{
    private readonly double _factor;

    private ScaleOp(Tensor x, double factor) : base(x) => _factor = factor;

    /// <inheritdoc/>
    public override string Name => "Scale";

    /// <summary>Forward; a factor of 1 returns x itself.</summary>
    public static Tensor Apply(Tensor x, double factor)
    {
        if (factor == 1) return x;
        return Record(new ScaleOp(x, factor), Scaled(x, factor));
    }

    /// <inheritdoc/>
    protected internal override void Backward(Tensor dOutput, BackwardContext context) =>
        context.Deliver(Inputs[0], Scaled(dOutput, _factor));

    private static Tensor Scaled(Tensor x, double factor)
    {
        var y = x.Backend.Cast(x, x.DType);
        x.Backend.ScaleInPlace(y, factor);
        return y;
    }
}
