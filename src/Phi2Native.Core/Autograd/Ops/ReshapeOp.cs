using Phi2Native.Tensors;

namespace Phi2Native.Autograd.Ops;

/// <summary>A view with another shape (e.g. [B, T, C] -> [B, T, H, D]); the gradient is reshaped back.</summary>
internal sealed class ReshapeOp : AutogradOp
{
    private ReshapeOp(Tensor x) : base(x) { }

    /// <inheritdoc/>
    public override string Name => "Reshape";

    /// <summary>Forward.</summary>
    public static Tensor Apply(Tensor x, params int[] shape) => Record(new ReshapeOp(x), x.Reshape(shape));

    /// <inheritdoc/>
    protected internal override void Backward(Tensor dOutput, BackwardContext context)
    {
        var x = Inputs[0]!;
        context.Deliver(x, dOutput.Reshape(x.Shape.ToArray()));
    }
}
