using Phi2Native.Tensors;

namespace Phi2Native.Autograd.Ops;

/// <summary>
/// y = x converted to another floating-point dtype (<see cref="IBackend.Cast"/>): the bridge between a bf16 base and an
/// fp32 LoRA branch. The cast is the identity up to rounding, so its gradient is the output's gradient cast back to the
/// input's dtype (a straight-through rounding, as PyTorch's <c>Tensor.to</c>).
/// </summary>
internal sealed class CastOp : AutogradOp
{
    private readonly DType _inputDType;

    private CastOp(Tensor x) : base(x) => _inputDType = x.DType;

    /// <inheritdoc/>
    public override string Name => "Cast";

    /// <summary>Forward; a cast to the dtype <paramref name="x"/> already has returns x itself (no op is recorded).</summary>
    public static Tensor Apply(Tensor x, DType dtype)
    {
        if (x.DType == dtype) return x;
        return Record(new CastOp(x), x.Backend.Cast(x, dtype));
    }

    /// <inheritdoc/>
    protected internal override void Backward(Tensor dOutput, BackwardContext context)
    {
        if (Inputs[0] is not { RequiresGrad: true } input) return;
        context.Deliver(input, dOutput.Backend.Cast(dOutput, _inputDType));
    }
}
