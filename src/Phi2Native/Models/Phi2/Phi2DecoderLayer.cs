using Phi2Native.Autograd.Ops;
using Phi2Native.Models.Modules;
using Phi2Native.Tensors;

namespace Phi2Native.Models.Phi2;

/// <summary>
/// <c>model.layers.{i}</c>: the parallel block. One LayerNorm feeds both branches:
/// h + drop(self_attn(x)) + drop(mlp(x)), x = input_layernorm(h).
/// </summary>
public sealed class Phi2DecoderLayer : Module
{
    private readonly Phi2Config _config;

    internal Phi2DecoderLayer(int index, Phi2Config config, WeightSource weights) : base($"model.layers.{index}")
    {
        _config = config;
        Index = index;
        InputLayerNorm = new LayerNorm($"{Name}.input_layernorm", config.HiddenSize, config.LayerNormEps, weights);
        SelfAttention = new Phi2Attention($"{Name}.self_attn", config, weights);
        Mlp = new Phi2Mlp($"{Name}.mlp", config, weights);
    }

    /// <summary>The layer's position, 0-based.</summary>
    public int Index { get; }

    /// <summary>The shared LayerNorm (phi-msft's "ln").</summary>
    public LayerNorm InputLayerNorm { get; }

    /// <summary>Attention branch (phi-msft's "mixer").</summary>
    public Phi2Attention SelfAttention { get; }

    /// <summary>MLP branch.</summary>
    public Phi2Mlp Mlp { get; }

    /// <summary>h [B, T, C] -> [B, T, C]. <paramref name="dropoutSeed"/> is used only when <paramref name="dropout"/> &gt; 0.</summary>
    /// <remarks>With a <paramref name="cache"/> (inference only) hidden holds the positions after the cache's Length,
    /// and attention reads and extends this layer's cached keys and values instead of seeing only hidden.</remarks>
    public Tensor Forward(Tensor hidden, double dropout, ulong dropoutSeed, KeyValueCache? cache = null)
    {
        var x = InputLayerNorm.Forward(hidden);
        var attention = cache is null ? SelfAttention.Forward(x) : SelfAttention.Forward(x, cache, Index);
        var mlp = Mlp.Forward(x);
        if (dropout > 0)
        {
            attention = DropoutOp.Apply(attention, dropout, dropoutSeed);
            mlp = DropoutOp.Apply(mlp, dropout, dropoutSeed ^ 0x5DEECE66DUL);
        }
        // HF order: (attention + mlp) + residual.
        return AddOp.Apply(AddOp.Apply(attention, mlp), hidden);
    }

    /// <inheritdoc/>
    public override IEnumerable<Tensor> Parameters() =>
        InputLayerNorm.Parameters().Concat(SelfAttention.Parameters()).Concat(Mlp.Parameters());
}
