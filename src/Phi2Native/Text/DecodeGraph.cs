using System.Runtime.InteropServices;
using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Decoding;
using Phi2Native.Cuda;
using Phi2Native.Models.Modules;
using Phi2Native.Models.Phi2;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Text;

/// <summary>
/// A decode step of the whole model (every layer, the final LayerNorm, lm_head, and the choice of the next token)
/// captured once per KV cache as a CUDA graph and replayed for each token, so a token costs one graph launch and one
/// host read instead of a launch per kernel.
/// </summary>
/// <remarks>
/// <para>What the graph reads and writes lives at fixed device addresses: the ids it embeds (I32 [B, 1], owned here),
/// the cache's keys, values and per-row positions (<see cref="KeyValueCache.Positions"/>, I32 [B] each). The step ends
/// with <see cref="DecodeNextOp"/>: for greedy decoding it writes each row's argmax into the ids the next replay embeds,
/// and it advances the positions by one on the device; the host's lengths follow (<see cref="KeyValueCache.AdvancedOnDevice"/>).
/// The host reads one thing per token: the chosen ids, or, when the host samples (temperature, top-k, top-p), the
/// logits row [B, V] the graph copies out, after which it uploads the sampled ids (a copy, no wait).</para>
/// <para>The host uploads the ids or positions only when they are not what the device holds (the first replay, a
/// sampled token, a row the decoding truncated). The first step (and the first after the model changed) runs the same
/// operations eagerly: a capture needs its kernels loaded and the allocator's cache holding the blocks it will take. The
/// next step captures, which runs nothing (the cache's bookkeeping and the model's counters are put back), then replays.</para>
/// <para>A graph replays the weights and adapters it was captured with: before each replay the model's parameters and
/// adapters are compared with the captured ones, by reference, and a change (a LoRA adapter attached, swapped or merged
/// between tokens) runs one step eagerly and re-captures at the next, updating the graph in place where its kernels are
/// the same (cuGraphExecUpdate), else replacing it. A capture that
/// fails (an op that reads back or uploads, an allocation the cache cannot serve) throws
/// <see cref="DecodeGraphCaptureException"/>, and the caller decodes the rest eagerly.</para>
/// </remarks>
internal sealed class DecodeGraph : IDisposable
{
    private readonly Phi2Model _model;
    private readonly KeyValueCache _cache;
    private readonly CudaBackend _backend;
    private readonly bool _greedy;
    private readonly Tensor _ids;          // I32 [B, 1]: the tokens the next replay embeds
    private readonly Tensor? _logits;      // [B, 1, V]: the step's logits, when the host samples
    private readonly int[] _deviceIds;     // what _ids holds, when _deviceIdsKnown
    private bool _deviceIdsKnown, _disposed;
    private DeviceGraph _graph;
    private object[] _captured = [], _warmed = [];   // the model's parameters and adapters at the capture, at the warm-up

    /// <summary>A graph for decoding through <paramref name="cache"/>; nothing is captured until the first <see cref="Step"/>.</summary>
    /// <param name="model">The model, in evaluation mode, on the CUDA backend.</param>
    /// <param name="cache">The cache the steps decode through; it outlives this graph.</param>
    /// <param name="greedy">Choose each token on the device (argmax); otherwise the step copies out the logits for the host's sampler.</param>
    /// <exception cref="ArgumentException">The model is not on the CUDA backend.</exception>
    public DecodeGraph(Phi2Model model, KeyValueCache cache, bool greedy)
    {
        _model = model;
        _cache = cache;
        _backend = model.Backend as CudaBackend ?? throw new ArgumentException("a decode graph needs a model on the CUDA backend", nameof(model));
        _greedy = greedy;
        _deviceIds = new int[cache.Batch];
        _ids = TensorScope.Detach(_backend.Zeros([cache.Batch, 1], DType.I32));
        _logits = greedy ? null : TensorScope.Detach(_backend.Empty([cache.Batch, 1, model.Config.VocabSize], cache.DType));
    }

    /// <summary>Whether <paramref name="model"/>'s backend can capture a decode step (the CUDA backend, on a GPU or emulated).</summary>
    public static bool Supports(Phi2Model model) => model.Backend is CudaBackend;

    /// <summary>Graph launches so far (one per <see cref="Step"/> but those that ran eagerly to warm up a capture).</summary>
    public int Replays { get; private set; }

    /// <summary>Captures so far: 1, plus one per re-capture after the model's weights or adapters changed.</summary>
    public int Captures { get; private set; }

    /// <summary>
    /// Runs one decode step of <paramref name="ids"/> (one per row, each in [0, V)) through the cache: greedy, the next
    /// ids (the argmax of each row's logits); otherwise the logits [B * V] for the host to sample from.
    /// </summary>
    /// <exception cref="ModelInputException">The cache is full.</exception>
    /// <exception cref="Phi2Exception">A row's logits hold a NaN (greedy).</exception>
    /// <exception cref="DecodeGraphCaptureException">The step could not be captured.</exception>
    public (int[]? Chosen, float[]? Logits) Step(int[] ids)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        int batch = _cache.Batch;
        _cache.EnsureRoom(batch, 1);
        if (!_deviceIdsKnown || !ids.AsSpan().SequenceEqual(_deviceIds))
        {
            if (ids.Length != batch) throw new ModelInputException($"{ids.Length} ids for a KV cache of {batch} rows; give one per row");
            for (int i = 0; i < ids.Length; i++)
                if (ids[i] < 0 || ids[i] >= _model.Config.VocabSize)
                    throw new ModelInputException($"token id {ids[i]} at row {i} is outside the vocabulary [0, {_model.Config.VocabSize})");
            _backend.DeviceApi.CopyToDevice(_backend.Pointer(_ids, "ids"), MemoryMarshal.AsBytes(ids.AsSpan()), _backend.Stream);
            ids.CopyTo(_deviceIds, 0);
            _deviceIdsKnown = true;
        }
        var positions = _cache.Positions(1);   // an upload only where the host changed a row's length
        object[] model = Fingerprint();
        bool ranEagerly = false;
        if (_graph.IsNone || !model.SequenceEqual(_captured, ReferenceEqualityComparer.Instance))
        {
            // A new model state runs once eagerly first: its kernels load, and the cache then holds blocks of exactly the
            // sizes the capture will ask for, with this graph's own buffers already taken.
            if (!model.SequenceEqual(_warmed, ReferenceEqualityComparer.Instance))
            {
                Run(positions, capture: false);
                _warmed = model;
                ranEagerly = true;
            }
            else
            {
                Run(positions, capture: true);
                _captured = model;
            }
        }
        if (!ranEagerly)
        {
            _backend.DeviceApi.LaunchGraph(_graph, _backend.Stream);
            Replays++;
        }
        _cache.AdvancedOnDevice();
        _model.Counters.AddTokens(batch);
        _model.Counters.AddLogitRows(batch);
        if (!_greedy) return (null, _logits!.ToSingleArray());

        var chosen = new int[batch];
        _backend.CopyToHost(_ids, MemoryMarshal.AsBytes(chosen.AsSpan()));   // the token's one host read
        if (chosen.Any(id => id < 0))
            throw new Phi2Exception("the logits hold a NaN: the model's output is broken (check the weights and dtype)");
        chosen.CopyTo(_deviceIds, 0);
        return (chosen, null);
    }

    // The step's operations, on the backend's stream: Forward through the cache, then DecodeNext (and the logits copy).
    // Captured (the profiler paused: a capture runs no work) or run eagerly; either way the host's bookkeeping is put back,
    // and Step advances it as after a replay.
    private void Run(CachePositions positions, bool capture)
    {
        var device = _backend.DeviceApi;
        var stream = _backend.Stream;
        var saved = _cache.SaveBookkeeping();
        int batch = _cache.Batch;
        using var pause = capture ? ProfileRecorder.Current?.Pause() : null;
        // A re-capture allocates from the graph's own pool again, so the update needs no memory beyond what it holds.
        if (capture) device.BeginCapture(stream, _graph);
        bool capturing = capture;
        try
        {
            using (TensorScope.Begin())
            {
                var logits = _model.Forward(_ids, _cache);                                  // [B, 1, V]
                DecodeNextOp.Apply(_greedy ? logits : null, _greedy ? _ids : null, positions.RowOffsets, positions.RowKeyTimes);
                if (_logits is not null) _backend.Copy(logits, _logits);
            }
            if (!capture) return;
            capturing = false;
            _graph = device.EndCapture(stream, _graph);
            Captures++;
        }
        catch (Exception e) when (e is Phi2Exception or InvalidOperationException or ArgumentException)
        {
            if (capturing)
            {
                try { device.EndCapture(stream); }
                catch (Exception end) when (end is Phi2Exception or InvalidOperationException or ArgumentException) { /* the capture was spoiled: e says why */ }
            }
            throw new DecodeGraphCaptureException($"the decode step could not be captured as a CUDA graph: {e.Message}", e);
        }
        finally
        {
            _cache.RestoreBookkeeping(saved);
            _model.Counters.AddTokens(-batch);
            _model.Counters.AddLogitRows(-batch);
        }
    }

    // What the graph baked in: every parameter tensor and every adapter, compared by reference.
    private object[] Fingerprint() =>
    [
        .. _model.Parameters(),
        .. _model.NamedModules().Select(m => m switch { Linear l => (object?)l.Adapter, Embedding e => e.Adapter, _ => null }).OfType<object>(),
    ];

    /// <summary>Destroys the graph (its memory pool goes back to the allocator) and frees the ids and logits buffers.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (!_graph.IsNone && !_backend.IsDisposed) _backend.DeviceApi.DestroyGraph(_graph);
        _graph = DeviceGraph.None;
        _ids.Dispose();
        _logits?.Dispose();
    }
}

/// <summary>A decode step could not be captured as a CUDA graph (the message says what refused); decoding goes on eagerly.</summary>
internal sealed class DecodeGraphCaptureException(string message, Exception inner) : Phi2Exception(message, inner);
