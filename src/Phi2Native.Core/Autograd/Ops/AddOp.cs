using Phi2Native.Tensors;

namespace Phi2Native.Autograd.Ops;

/// <summary>Elementwise a + b of equal shapes (the residual add). Both inputs receive the output's gradient.</summary>
internal sealed class AddOp : AutogradOp
{
    private AddOp(Tensor a, Tensor b) : base(a, b) { }

    /// <inheritdoc/>
    public override string Name => "Add";

    /// <summary>Forward.</summary>
    public static Tensor Apply(Tensor a, Tensor b) => Record(new AddOp(a, b), a.Backend.Add(a, b));

    /// <inheritdoc/>
    protected internal override void Backward(Tensor dOutput, BackwardContext context)
    {
        // Views, not copies: the context never writes in place into a buffer two gradients share.
        foreach (var input in Inputs)
            if (input is { RequiresGrad: true }) context.Deliver(input, dOutput.Reshape(input.Shape.ToArray()));
    }
}
