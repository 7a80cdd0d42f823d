using Phi2Native.Tensors;

namespace Phi2Native.Autograd.Ops;

/// <summary>
/// Causal scaled-dot-product attention over q [B, Tq, H, D], k and v [B, Tk, H, D] -> [B, Tq, H, D].
/// Saves only logSumExp [B, H, Tq]; backward recomputes the probabilities (flash-style memory).
/// </summary>
public sealed class AttentionOp : AutogradOp
{
    private readonly Tensor _q, _k, _v, _logSumExp;

    private AttentionOp(Tensor q, Tensor k, Tensor v, Tensor logSumExp) : base(q, k, v) =>
        (_q, _k, _v, _logSumExp) = (q, k, v, logSumExp);

    /// <inheritdoc/>
    public override string Name => "Attention";

    /// <summary>Forward.</summary>
    public static Tensor Apply(Tensor q, Tensor k, Tensor v)
    {
        var output = q.Backend.Attention(q, k, v, out var logSumExp);
        return Record(new AttentionOp(q, k, v, logSumExp), output);
    }

    /// <inheritdoc/>
    protected internal override void Backward(Tensor dOutput, BackwardContext context)
    {
        Tensor? dq = context.NewGradient(_q), dk = context.NewGradient(_k), dv = context.NewGradient(_v);
        _q.Backend.AttentionBackward(dOutput, _q, _k, _v, Output, _logSumExp, dq, dk, dv);
        context.Deliver(_q, dq);
        context.Deliver(_k, dk);
        context.Deliver(_v, dv);
    }

    /// <inheritdoc/>
    protected internal override void ReleaseSaved() => _logSumExp.Dispose();
}
