using Phi2Native.Autograd.Ops;
using Phi2Native.Backends.Ops.Attention;
using Phi2Native.Backends.Ops.KvCache;
using Phi2Native.Backends.Ops.Qkv;
using Phi2Native.Backends.Ops.Rotary;
using Phi2Native.FineTuning.Lora;
using Phi2Native.Models.Modules;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Models.Phi2;

/// <summary>
/// <c>model.layers.{i}.self_attn</c>: q_proj, k_proj, v_proj and dense (all [C, C] with bias); partial rotary on
/// the first RotaryDim dims of each head; causal softmax attention in fp32 (or wider) scaled by 1/sqrt(D).
/// </summary>
/// <remarks>
/// q_proj, k_proj and v_proj live in one [3C, C] weight and one [3C] bias (<see cref="LinearStack"/>); each projection's
/// tensors are views of their row block. The three run as one op (QkvProjectionOp: one GEMM and one split/rotary/cache
/// kernel each way; with LoRA adapters on any of them, their branches in between: 2 more launches forward, 4 backward) unless
/// another kind of adapter is attached to one of them (<see cref="ProjectQkv"/>).
/// </remarks>
public sealed class Phi2Attention : Module
{
    private readonly Phi2Config _config;

    internal Phi2Attention(string name, Phi2Config config, WeightSource weights) : base(name)
    {
        _config = config;
        int c = config.HiddenSize;
        var qkv = LinearStack.Load(weights, [ChildName("q_proj"), ChildName("k_proj"), ChildName("v_proj")], c, c);
        (QProj, KProj, VProj) = (qkv[0], qkv[1], qkv[2]);
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
        var (q, k, v) = ProjectQkv(x, null, null, null);            // [B, T, H, D] each, q and k rotated
        var attended = AttentionOp.Apply(q, k!, v!);                 // [B, T, H, D]
        return Dense.Forward(ReshapeOp.Apply(attended, batch, time, heads * headDim));
    }

    /// <summary>
    /// Inference through a KV cache: x [B, T, C] holds the T positions after the cache's Length t. Their keys
    /// and values (rotated at positions t .. t + T - 1) are written into the cache's rows [t, t + T) of layer
    /// <paramref name="layer"/>, and the T queries attend over rows [0, t + T) in place -> [B, T, C]. When the cache's
    /// rows hold different lengths, each row b does the same at its own t = cache.RowLength(b). The caller advances
    /// the cache once every layer has run. Adapters on q/k/v apply (<see cref="ProjectQkv"/>).
    /// </summary>
    public Tensor Forward(Tensor x, KeyValueCache cache, int layer) => Forward(x, cache, layer, null);

    /// <summary>
    /// As <see cref="Forward(Tensor, KeyValueCache, int)"/>; with a <paramref name="residual"/> [B, T, C] (and no adapter
    /// on dense) the result is residual + attention, the residual added by dense's GEMM (beta 1) into a new tensor.
    /// </summary>
    internal Tensor Forward(Tensor x, KeyValueCache cache, int layer, Tensor? residual)
    {
        using var profile = ProfileScope.Module(Name);
        int batch = x.Size(0), time = x.Size(1), heads = _config.NumAttentionHeads, headDim = _config.HeadDim;
        var positions = cache.Positions(time);
        Tensor keys = cache.Keys(layer), values = cache.Values(layer);   // [B, Tmax, H, D]
        var (q, _, _) = ProjectQkv(x, positions.RowOffsets, keys, values); // q [B, T, H, D] at positions t .. t + T - 1 (t per row)
        var attended = AttentionOp.Cached(q, keys, values, positions.RowKeyTimes);   // [B, T, H, D]
        var merged = ReshapeOp.Apply(attended, batch, time, heads * headDim);
        return residual is null ? Dense.Forward(merged) : Dense.ForwardAdding(merged, residual, inPlace: false);
    }

    /// <summary>
    /// The seam of the q/k/v projections: x [B, T, C] -> q, k, v [B, T, H, D] with q and k rotated at positions[b] + t;
    /// with caches, k and v go into their rows [p, p + T) instead (and come back null). One QkvProjectionOp (one GEMM,
    /// one kernel) when q_proj, k_proj and v_proj carry no adapter or LoRA adapters (LoraLinear; a merged one is detached):
    /// their branches go into the fused [N, 3C] product through LoraQkvOp (2 more launches), each module's dropout mask
    /// counted in q, k, v order as three LoraLinear forwards would. Any other adapter (an IModuleAdapter that is not a
    /// LoraLinear) needs its projection's own [N, C] output, which is a column block of the fused one (not a tensor
    /// without a copy), so such a layer keeps the per-projection path here (three Linears, rotary, cache writes).
    /// </summary>
    private (Tensor Q, Tensor? K, Tensor? V) ProjectQkv(Tensor x, Tensor? positions, Tensor? keys, Tensor? values)
    {
        var shape = new QkvShape(_config.NumAttentionHeads, _config.HeadDim, _config.RotaryDim, _config.RopeTheta);
        if (QProj.Adapter is null or LoraLinear && KProj.Adapter is null or LoraLinear && VProj.Adapter is null or LoraLinear)
        {
            bool adapted = QProj.Adapter is not null || KProj.Adapter is not null || VProj.Adapter is not null;
            var parameters = new QkvParameters([QProj.Weight, KProj.Weight, VProj.Weight], [QProj.Bias!, KProj.Bias!, VProj.Bias!])
            {
                Adapters = adapted
                    ? [LoraLinear.QkvModule(QProj, QProj.Training), LoraLinear.QkvModule(KProj, KProj.Training), LoraLinear.QkvModule(VProj, VProj.Training)]
                    : null,
            };
            if (keys is null) return QkvProjectionOp.Apply(x, parameters, shape, positions);
            return (QkvProjectionOp.Cached(x, parameters, shape, positions!, keys, values!), null, null);
        }
        int batch = x.Size(0), time = x.Size(1);
        Tensor Heads(Linear projection) => ReshapeOp.Apply(projection.Forward(x), batch, time, shape.Heads, shape.HeadDim);
        Tensor Rotate(Tensor t) => shape.RotaryDim == 0 ? t
            : keys is null ? RotaryOp.Apply(t, shape.RotaryDim, shape.Theta, positions) : RotaryOp.Forward(t, shape.RotaryDim, shape.Theta, positions);
        var q = Rotate(Heads(QProj));
        if (keys is null) return (q, Rotate(Heads(KProj)), Heads(VProj));
        KvCacheOp.Write(Rotate(Heads(KProj)), keys, positions!);
        KvCacheOp.Write(Heads(VProj), values!, positions!);
        return (q, null, null);
    }

    /// <summary>The four projections, in checkpoint order.</summary>
    public IEnumerable<Linear> Projections() => [QProj, KProj, VProj, Dense];

    /// <inheritdoc/>
    protected override IEnumerable<Module> Children() => Projections();
}
