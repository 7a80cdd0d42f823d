using Phi2Native.Tensors;

namespace Phi2Native.Models.Phi2;

/// <summary>
/// The keys and values of every layer for the positions a model has already seen, so that generation runs each new
/// token as one query position against them instead of recomputing the whole prefix.
/// </summary>
/// <remarks>
/// Per layer, keys and values are [B, Tmax, H, D] tensors on the model's backend, in the activations' dtype, filled
/// by position: after forwards over T1, T2, ... tokens, rows [0, <see cref="Length"/>) of each batch row hold the
/// rotated keys and the values of those positions (keys are stored after rotary, so a cached key is never rotated
/// again). <see cref="Phi2Model.Forward(Tensor, KeyValueCache)"/> writes rows [Length, Length + T) in every layer,
/// attends over rows [0, Length + T) in place, then advances <see cref="Length"/> by T. Memory: 2 x layers x B x Tmax x C
/// elements (Phi-2, B = 1, Tmax = 2048, fp32: 1.34 GB), allocated once.
/// </remarks>
public sealed class KeyValueCache : IDisposable
{
    private readonly Tensor[] _keys, _values;
    private bool _disposed;

    /// <summary>Allocates an empty cache for <paramref name="model"/>: <paramref name="batch"/> rows of at most <paramref name="capacity"/> positions.</summary>
    /// <exception cref="ModelInputException">The batch is not positive, or the capacity is not in [1, max_position_embeddings].</exception>
    public KeyValueCache(Phi2Model model, int batch, int capacity)
    {
        ArgumentNullException.ThrowIfNull(model);
        var config = model.Config;
        if (batch <= 0) throw new ModelInputException($"a KV cache needs a batch of at least 1 row, not {batch}");
        if (capacity <= 0 || capacity > config.MaxPositionEmbeddings)
            throw new ModelInputException($"a KV cache of {capacity} positions is outside [1, max_position_embeddings = {config.MaxPositionEmbeddings}]");
        Batch = batch;
        Capacity = capacity;
        DType = model.EmbedTokens.Weight.DType;
        int[] shape = [batch, capacity, config.NumAttentionHeads, config.HeadDim];
        _keys = new Tensor[config.NumHiddenLayers];
        _values = new Tensor[config.NumHiddenLayers];
        // Zeroed rather than left undefined: rows past Length are never read, but a poisoned backend would otherwise
        // hold NaN in them, which is harmless yet confusing when debugging. The cache owns its tensors, not any scope.
        for (int i = 0; i < _keys.Length; i++)
        {
            _keys[i] = TensorScope.Detach(model.Backend.Zeros(shape, DType));
            _values[i] = TensorScope.Detach(model.Backend.Zeros(shape, DType));
        }
    }

    /// <summary>B: rows of the batch.</summary>
    public int Batch { get; }

    /// <summary>Tmax: positions the cache can hold.</summary>
    public int Capacity { get; }

    /// <summary>Element type of the cached keys and values (the model's activation dtype).</summary>
    public DType DType { get; }

    /// <summary>t: positions filled so far; the next forward's first token sits at this position.</summary>
    public int Length { get; private set; }

    /// <summary>Positions still free.</summary>
    public int Remaining => Capacity - Length;

    /// <summary>Layers covered (one key and one value tensor each).</summary>
    public int LayerCount => _keys.Length;

    /// <summary>Positions computed by forwards through this cache so far, summed over the batch (B x T per forward): a
    /// prefill of T tokens adds B x T, each decode step B.</summary>
    public long PositionsComputed { get; private set; }

    /// <summary>Layer <paramref name="layer"/>'s keys [B, Tmax, H, D] (rows [0, Length) are valid).</summary>
    public Tensor Keys(int layer) => Alive()._keys[layer];

    /// <summary>Layer <paramref name="layer"/>'s values [B, Tmax, H, D] (rows [0, Length) are valid).</summary>
    public Tensor Values(int layer) => Alive()._values[layer];

    /// <summary>Forgets every position (the memory is kept and overwritten by the next forward).</summary>
    public void Reset()
    {
        Alive();
        Length = 0;
    }

    /// <summary>Checks that <paramref name="time"/> more positions fit, before a forward writes any of them.</summary>
    /// <exception cref="ModelInputException">They do not fit.</exception>
    internal void EnsureRoom(int batch, int time)
    {
        Alive();
        if (batch != Batch)
            throw new ModelInputException($"a batch of {batch} rows does not match the KV cache's {Batch}");
        if (time > Remaining)
            throw new ModelInputException($"{time} more positions do not fit in the KV cache: {Length} of {Capacity} are used");
    }

    /// <summary>Marks <paramref name="time"/> positions written by every layer as filled.</summary>
    internal void Advance(int time)
    {
        Length += time;
        PositionsComputed += (long)Batch * time;
    }

    /// <summary>Frees every key and value tensor.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var tensor in _keys.Concat(_values)) tensor.Dispose();
    }

    private KeyValueCache Alive()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return this;
    }
}
