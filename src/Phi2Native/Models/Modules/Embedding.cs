using Phi2Native.Autograd.Ops;
using Phi2Native.Tensors;

namespace Phi2Native.Models;

/// <summary>Token embedding table weight [V, C].</summary>
public sealed class Embedding : Module
{
    /// <summary>Loads the module's parameter from <paramref name="weights"/>.</summary>
    public Embedding(string name, int vocabSize, int channels, WeightSource weights) : base(name) =>
        Weight = Take(weights, "weight", vocabSize, channels);

    /// <summary>[V, C].</summary>
    public Tensor Weight { get; }

    /// <summary>ids [...] (I32) -> [..., C].</summary>
    public Tensor Forward(Tensor ids) => EmbeddingOp.Apply(Weight, ids);

    /// <inheritdoc/>
    public override IEnumerable<Tensor> Parameters() => [Weight];
}
