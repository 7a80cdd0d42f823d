using Phi2Native.Autograd.Ops;
using Phi2Native.Backends.Ops.Residual;
using Phi2Native.Determinism;
using Phi2Native.Models.Modules;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Models.Phi2;

/// <summary>
/// <c>model.layers.{i}</c>: the parallel block. One LayerNorm feeds both branches:
/// h + drop(self_attn(x)) + drop(mlp(x)), x = input_layernorm(h).
/// </summary>
public sealed class Phi2DecoderLayer : Module
{
    internal Phi2DecoderLayer(string name, int index, Phi2Config config, WeightSource weights) : base(name)
    {
        Index = index;
        InputLayerNorm = new LayerNorm(ChildName("input_layernorm"), config.HiddenSize, config.LayerNormEps, weights);
        SelfAttention = new Phi2Attention(ChildName("self_attn"), config, weights);
        Mlp = new Phi2Mlp(ChildName("mlp"), config, weights);
    }

    /// <summary>The layer's position, 0-based.</summary>
    public int Index { get; }

    /// <summary>The shared LayerNorm (phi-msft's "ln").</summary>
    public LayerNorm InputLayerNorm { get; }

    /// <summary>Attention branch (phi-msft's "mixer").</summary>
    public Phi2Attention SelfAttention { get; }

    /// <summary>MLP branch.</summary>
    public Phi2Mlp Mlp { get; }

    /// <summary>
    /// h [B, T, C] -> [B, T, C]. With <paramref name="dropout"/> &gt; 0 each branch's output is dropped out with a seed
    /// derived from <paramref name="forwardSeed"/> (the training forward's) and this layer's index.
    /// </summary>
    /// <remarks>With a <paramref name="cache"/> (inference only) hidden holds the positions after the cache's Length,
    /// and attention reads and extends this layer's cached keys and values instead of seeing only hidden.</remarks>
    public Tensor Forward(Tensor hidden, double dropout, ulong forwardSeed, KeyValueCache? cache = null)
    {
        using var profile = ProfileScope.Module(Name);
        var x = InputLayerNorm.Forward(hidden);
        if (cache is not null && dropout == 0 && SelfAttention.Dense.Adapter is null && Mlp.Fc2.Adapter is null)
        {
            // Inference through a KV cache: the parallel block's sum in the GEMMs' own accumulation (beta 1), no
            // parallel_residual launch: dense's GEMM writes hidden + attention into a new tensor, fc2's adds the MLP into
            // it. HF sums (attention + mlp) + hidden; this is (hidden + attention) + mlp, each sum in fp32 with its
            // product and rounded once (two roundings in bf16 where parallel_residual took the branch outputs' two and
            // its own one).
            var afterAttention = SelfAttention.Forward(x, cache, Index, residual: hidden);
            return Mlp.ForwardAdding(x, afterAttention);
        }
        var attention = cache is null ? SelfAttention.Forward(x) : SelfAttention.Forward(x, cache, Index);
        var mlp = Mlp.Forward(x);
        // HF's order, (dropout(attention) + dropout(mlp)) + residual, in one pass.
        return ParallelResidualOp.Apply(attention, mlp, hidden, dropout,
            Seeds.Derive(forwardSeed, SeedPurpose.AttentionResidualDropout, Index), Seeds.Derive(forwardSeed, SeedPurpose.MlpResidualDropout, Index));
    }

    /// <inheritdoc/>
    protected override IEnumerable<Module> Children() => [InputLayerNorm, SelfAttention, Mlp];
}
