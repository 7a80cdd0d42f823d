using Phi2Native.Tensors;

namespace Phi2Native.Autograd.Ops;

/// <summary>Embedding lookup: weight [V, C] at ids [...] -> [..., C]. Backward scatters into dWeight (+=).</summary>
public sealed class EmbeddingOp : AutogradOp
{
    private readonly Tensor _weight, _ids;

    private EmbeddingOp(Tensor weight, Tensor ids) : base(weight) => (_weight, _ids) = (weight, ids);

    /// <inheritdoc/>
    public override string Name => "Embedding";

    /// <summary>Forward.</summary>
    public static Tensor Apply(Tensor weight, Tensor ids) =>
        Record(new EmbeddingOp(weight, ids), weight.Backend.Embedding(weight, ids));

    /// <inheritdoc/>
    protected internal override void Backward(Tensor dOutput, BackwardContext context) =>
        _weight.Backend.EmbeddingBackward(dOutput, _ids, context.AccumulatorFor(_weight)!);
}
