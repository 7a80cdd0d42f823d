using Phi2Native.Autograd.Ops;
using Phi2Native.Backends.Ops.Embeddings;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Models.Modules;

/// <summary>Token embedding table weight [V, C].</summary>
public sealed class Embedding : Module
{
    /// <summary>Loads the module's parameter from <paramref name="weights"/>.</summary>
    public Embedding(string name, int vocabSize, int channels, WeightSource weights) : base(name) =>
        Weight = Take(weights, "weight", vocabSize, channels);

    /// <summary>[V, C].</summary>
    public Tensor Weight { get; }

    /// <summary>An adapter (LoRA) that changes this module's output, or null.</summary>
    public IModuleAdapter? Adapter { get; set; }

    /// <summary>ids [...] (I32) -> [..., C].</summary>
    public Tensor Forward(Tensor ids)
    {
        using var profile = ProfileScope.Module(Name);
        var y = EmbeddingOp.Apply(Weight, ids);
        return Adapter is null ? y : Adapter.Forward(ids, y, Training);
    }

    /// <inheritdoc/>
    protected override IEnumerable<Tensor> OwnParameters() => [Weight];
}
