using Phi2Native.Autograd.Ops;
using Phi2Native.Backends.Ops.Attention;
using Phi2Native.Backends.Ops.KvCache;
using Phi2Native.Backends.Ops.Rotary;
using Phi2Native.Models.Modules;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Models.Phi2;

/// <summary>
/// <c>model.layers.{i}.self_attn</c>: q_proj, k_proj, v_proj and dense (all [C, C] with bias); partial rotary on
/// the first RotaryDim dims of each head; causal softmax attention in fp32 (or wider) scaled by 1/sqrt(D).
/// </summary>
public sealed class Phi2Attention : Module
{
    private readonly Phi2Config _config;

    internal Phi2Attention(string name, Phi2Config config, WeightSource weights) : base(name)
    {
        _config = config;
        int c = config.HiddenSize;
        QProj = new Linear(ChildName("q_proj"), c, c, weights);
        KProj = new Linear(ChildName("k_proj"), c, c, weights);
        VProj = new Linear(ChildName("v_proj"), c, c, weights);
        Dense = new Linear(ChildName("dense"), c, c, weights);
    }

    /// <summary>Query projection [C, C].</summary>
    public Linear QProj { get; }

    /// <summary>Key projection [C, C].</summary>
    public Linear KProj { get; }

    /// <summary>Value projection [C, C].</summary>
    public Linear VProj { get; }

    /// <summary>Output projection [C, C] (phi-msft's out_proj).</summary>
    public Linear Dense { get; }

    /// <summary>x [B, T, C] (the layer's normalized input) -> [B, T, C], before the residual dropout.</summary>
    public Tensor Forward(Tensor x)
    {
        using var profile = ProfileScope.Module(Name);
        int batch = x.Size(0), time = x.Size(1), heads = _config.NumAttentionHeads, headDim = _config.HeadDim;
        Tensor Heads(Linear projection) => ReshapeOp.Apply(projection.Forward(x), batch, time, heads, headDim);
        Tensor Rotate(Tensor t) => _config.RotaryDim == 0 ? t : RotaryOp.Apply(t, _config.RotaryDim, _config.RopeTheta);
        var q = Rotate(Heads(QProj));                           // [B, T, H, D]
        var k = Rotate(Heads(KProj));
        var v = Heads(VProj);
        var attended = AttentionOp.Apply(q, k, v);              // [B, T, H, D]
        return Dense.Forward(ReshapeOp.Apply(attended, batch, time, heads * headDim));
    }

    /// <summary>
    /// Inference through a KV cache: x [B, T, C] holds the T positions after the cache's Length t. Their keys
    /// and values (rotated at positions t .. t + T - 1) are written into the cache's rows [t, t + T) of layer
    /// <paramref name="layer"/>, and the T queries attend over rows [0, t + T) in place -> [B, T, C]. When the cache's
    /// rows hold different lengths, each row b does the same at its own t = cache.RowLength(b). The caller advances
    /// the cache once every layer has run. q/k/v still go through Linear.Forward, so adapters apply.
    /// </summary>
    public Tensor Forward(Tensor x, KeyValueCache cache, int layer)
    {
        using var profile = ProfileScope.Module(Name);
        int batch = x.Size(0), time = x.Size(1), heads = _config.NumAttentionHeads, headDim = _config.HeadDim;
        var positions = cache.Positions(time);
        Tensor Heads(Linear projection) => ReshapeOp.Apply(projection.Forward(x), batch, time, heads, headDim);
        Tensor Rotate(Tensor t) => _config.RotaryDim == 0 ? t : RotaryOp.Forward(t, _config.RotaryDim, _config.RopeTheta, positions.RowOffsets);
        var q = Rotate(Heads(QProj));                           // [B, T, H, D] at positions t .. t + T - 1 (t per row)
        Tensor keys = cache.Keys(layer), values = cache.Values(layer);   // [B, Tmax, H, D]
        KvCacheOp.Write(Rotate(Heads(KProj)), keys, positions.RowOffsets);
        KvCacheOp.Write(Heads(VProj), values, positions.RowOffsets);
        var attended = AttentionOp.Cached(q, keys, values, positions.RowKeyTimes);   // [B, T, H, D]
        return Dense.Forward(ReshapeOp.Apply(attended, batch, time, heads * headDim));
    }

    /// <summary>The four projections, in checkpoint order.</summary>
    public IEnumerable<Linear> Projections() => [QProj, KProj, VProj, Dense];

    /// <inheritdoc/>
    protected override IEnumerable<Module> Children() => Projections();
}
