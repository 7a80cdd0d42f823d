using Phi2Native.Tensors;

namespace Phi2Native.Autograd.Ops;

/// <summary>The transpose of a matrix [R, C] -> [C, R] (a copy); the gradient is transposed back.</summary>
internal sealed class TransposeOp : AutogradOp
{
    private TransposeOp(Tensor matrix) : base(matrix) { }

    /// <inheritdoc/>
    public override string Name => "Transpose";

    /// <summary>Forward.</summary>
    public static Tensor Apply(Tensor matrix) => Record(new TransposeOp(matrix), matrix.Backend.Transpose(matrix));

    /// <inheritdoc/>
    protected internal override void Backward(Tensor dOutput, BackwardContext context) =>
        context.Deliver(Inputs[0], dOutput.Backend.Transpose(dOutput));
}
