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
/// <para>Each batch row is its own sequence with its own length (<see cref="RowLength"/>): a forward appends its T
/// tokens to every row at that row's length, at that row's positions. Rows start equal and stay equal until
/// <see cref="Truncate"/> shortens one, e.g. after a batch of prompts of different lengths was prefilled right-padded
/// to the longest: truncating each row to its prompt's length forgets the padding, whose slots the next tokens
/// overwrite. A pad never influences a real position, since attention is causal and pads come after.</para>
/// <para>The per-row positions a forward reads (offsets and key counts) are two I32 [B] tensors the cache owns for its
/// lifetime, rewritten in place, so a decode step captured as a CUDA graph (DecodeGraph) reads them at fixed addresses
/// and advances them on the device; <see cref="RowLength"/> and <see cref="Length"/> stay the host's exact count.</para>
/// </remarks>
public sealed class KeyValueCache : IDisposable
{
    private readonly Tensor[] _keys, _values;
    private readonly int[] _lengths;
    private readonly IBackend _backend;
    // Each row's offset (its length) and key count (length + T) for a forward of T tokens, I32 [B] on the backend:
    // allocated once, so a captured decode step reads them at fixed addresses, and rewritten in place, by an upload
    // when the host changed the lengths, or on the device by the captured step itself (AdvancedOnDevice).
    private readonly Tensor _rowOffsets, _rowKeyTimes;
    private CachePositions? _positions;   // what the two tensors hold now, or null when stale
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
        _lengths = new int[batch];
        _backend = model.Backend;
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
        _rowOffsets = TensorScope.Detach(model.Backend.Zeros([batch], DType.I32));
        _rowKeyTimes = TensorScope.Detach(model.Backend.Zeros([batch], DType.I32));
    }

    /// <summary>B: rows of the batch.</summary>
    public int Batch { get; }

    /// <summary>Tmax: positions the cache can hold.</summary>
    public int Capacity { get; }

    /// <summary>Element type of the cached keys and values (the model's activation dtype).</summary>
    public DType DType { get; }

    /// <summary>t: positions filled so far in the longest row; while every row has the same length (always, unless
    /// <see cref="Truncate"/> made them differ) the next forward's first token sits at this position.</summary>
    public int Length => _lengths.Max();

    /// <summary>Positions still free in the longest row: the most tokens the next forward may append.</summary>
    public int Remaining => Capacity - Length;

    /// <summary>Positions filled in batch row <paramref name="row"/>; the next forward's first token of that row sits there.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The row is outside [0, B).</exception>
    public int RowLength(int row)
    {
        Alive();
        if (row < 0 || row >= Batch) throw new ArgumentOutOfRangeException(nameof(row), row, $"the KV cache has rows [0, {Batch})");
        return _lengths[row];
    }

    /// <summary>Whether every row holds the same number of positions.</summary>
    public bool RowsEqual => _lengths.All(length => length == _lengths[0]);

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
        Array.Clear(_lengths);
        ForgetPositions();
    }

    /// <summary>
    /// Shortens row <paramref name="row"/> to its first <paramref name="length"/> positions: the rest are forgotten and
    /// the next forward writes that row's tokens from there. Other rows are untouched.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The row is outside [0, B), or the length outside [0, RowLength(row)].</exception>
    public void Truncate(int row, int length)
    {
        int current = RowLength(row);
        if (length < 0 || length > current)
            throw new ArgumentOutOfRangeException(nameof(length), length, $"row {row} holds {current} positions; it can be truncated to [0, {current}] of them");
        if (length == current) return;
        _lengths[row] = length;
        ForgetPositions();
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

    /// <summary>Marks <paramref name="time"/> positions written by every layer as filled, in every row.</summary>
    internal void Advance(int time)
    {
        for (int b = 0; b < _lengths.Length; b++) _lengths[b] += time;
        PositionsComputed += (long)Batch * time;
        ForgetPositions();
    }

    /// <summary>
    /// Marks one position filled in every row after a decode step that advanced the position tensors itself on the
    /// device (DecodeNextOp inside a captured step): the host's lengths follow, and the tensors stay current (for T = 1).
    /// </summary>
    /// <exception cref="InvalidOperationException">The tensors did not describe a one-token forward at the current lengths.</exception>
    internal void AdvancedOnDevice()
    {
        if (_positions is not { Time: 1 })
            throw new InvalidOperationException("the KV cache's position tensors were not current for a one-token step, so the device could not have advanced them");
        for (int b = 0; b < _lengths.Length; b++) _lengths[b]++;
        PositionsComputed += Batch;
    }

    /// <summary>The host's bookkeeping (lengths, positions computed, position tensors' state), to restore after a forward
    /// that was captured into a graph rather than run.</summary>
    internal (int[] Lengths, long Computed, CachePositions? Positions) SaveBookkeeping() => ([.. _lengths], PositionsComputed, _positions);

    /// <summary>Puts back what <see cref="SaveBookkeeping"/> saved: a captured forward ran nothing, so nothing advanced.</summary>
    internal void RestoreBookkeeping((int[] Lengths, long Computed, CachePositions? Positions) saved)
    {
        saved.Lengths.CopyTo(_lengths, 0);
        PositionsComputed = saved.Computed;
        _positions = saved.Positions;
    }

    /// <summary>
    /// Where a forward of <paramref name="time"/> new tokens puts them: each row's offset (its length) and key count
    /// (length + T) as I32 [B] tensors on the model's backend, for all layers (rows of equal length give equal values:
    /// one form for every case, read by the kernels on the device). The tensors are the cache's, at fixed addresses for
    /// its lifetime; they are uploaded here only when the lengths or T changed since they were last made.
    /// </summary>
    internal CachePositions Positions(int time)
    {
        Alive();
        if (_positions is { } made && made.Time == time) return made;
        int[] keyTimes = _lengths.Select(length => length + time).ToArray();
        Upload(_rowOffsets, _lengths);
        Upload(_rowKeyTimes, keyTimes);
        return _positions = new CachePositions(time, _rowOffsets, _rowKeyTimes);
    }

    // Host ints into an I32 tensor in place: no allocation, so the tensor keeps its address.
    private void Upload(Tensor destination, int[] values)
    {
        var bytes = System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan());
        switch (_backend)
        {
            case Backends.Cpu.CpuBackend:
                values.CopyTo(Backends.Cpu.CpuBackend.Span<int>(destination));
                break;
            case Backends.Cuda.CudaBackend cuda:
                cuda.DeviceApi.CopyToDevice(cuda.Pointer(destination, nameof(destination)), bytes, cuda.Stream);
                break;
            default:
                using (var staged = _backend.FromBytes(bytes, DType.I32, [values.Length], DType.I32)) _backend.Copy(staged, destination);
                break;
        }
    }

    private void ForgetPositions() => _positions = null;

    /// <summary>Frees every key and value tensor.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        ForgetPositions();
        foreach (var tensor in _keys.Concat(_values)) tensor.Dispose();
        _rowOffsets.Dispose();
        _rowKeyTimes.Dispose();
    }

    private KeyValueCache Alive()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return this;
    }
}

/// <summary>
/// The positions of a forward's T new tokens in a KV cache, as I32 [B] tensors: each row's offset (its length before
/// the forward) and key count (length + T). The tensors are the cache's own (it frees them), the same two for its
/// lifetime, so a captured decode step can read and advance them in place.
/// </summary>
internal sealed record CachePositions(int Time, Tensor RowOffsets, Tensor RowKeyTimes);
