using Phi2Native.Autograd;
using Phi2Native.Backends.Ops.Optimizer;
using Phi2Native.Cuda;
using Phi2Native.FineTuning.Lora;
using Phi2Native.FineTuning.Optim;
using Phi2Native.FineTuning.Selection;
using Phi2Native.Models.Phi2;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Hosting;

/// <summary>What <c>phi2 profile</c> measures.</summary>
public enum ProfileWorkload
{
    /// <summary>A full training step: every parameter trains (forward, backward, clipping, AdamW).</summary>
    Train,

    /// <summary>A LoRA step over the frozen base (the preset's modules, r 16, alpha 32, every layer).</summary>
    Lora,

    /// <summary>One token decoded after a prefill of T.</summary>
    Decode,

    /// <summary>A prefill of T tokens into a KV cache (logits of the last position only).</summary>
    Prefill,
}

/// <summary>The options of a <see cref="ProfileRun"/>; the CLI's <c>phi2 profile</c> options one for one.</summary>
public sealed record ProfileOptions
{
    /// <summary>Where it computes.</summary>
    public DeviceChoice Device { get; init; } = DeviceChoice.Cpu;

    /// <summary>A model folder (its config and weights); null: <see cref="Config"/>.</summary>
    public string? ModelDirectory { get; init; }

    /// <summary>A config with random weights when no folder is given: the embedded model's (null) or Phi-2's.</summary>
    public Phi2Config? Config { get; init; }

    /// <summary>The decoder layers (random weights, the config's widths); null: the config's own.</summary>
    public int? Layers { get; init; }

    /// <summary>B, at least 1.</summary>
    public int Batch { get; init; } = 1;

    /// <summary>T, at least 2 (for decode: the prefill's length before the measured token).</summary>
    public int Sequence { get; init; } = 64;

    /// <summary>What to measure.</summary>
    public ProfileWorkload What { get; init; } = ProfileWorkload.Lora;

    /// <summary>The task preset whose modules a LoRA step adapts.</summary>
    public string Preset { get; init; } = "update-knowledge";

    /// <summary>The compute dtype (bf16 on a CUDA device only).</summary>
    public DType DType { get; init; } = DType.F32;

    /// <summary>
    /// Model the step at this batch, length and depth instead (<see cref="ProfileScaling"/>): the run's launches scaled by
    /// the cost formulas, for a step too large to run here (B 4, T 2048, 32 layers of Phi-2 on the emulator). Null: as run.
    /// </summary>
    public (int Batch, int Sequence, int Layers)? ModelAt { get; init; }

    /// <summary>Count each launch's real memory traffic on the emulated device (slow; for checking declarations).</summary>
    public bool CountTraffic { get; init; }

    /// <summary>
    /// Decode only, on a CUDA device: measure a token replayed from the decode step captured as a CUDA graph, as
    /// generation runs it (the warm-up prefills, runs one step eagerly and captures the next), instead of the step's
    /// launches one by one. Default false.
    /// </summary>
    public bool CudaGraphs { get; init; }
}

/// <summary>
/// Runs one warm-up step and one measured step of a workload under a <see cref="ProfileRecorder"/> and sums the
/// measured step into a <see cref="ProfileReport"/> (what <c>phi2 profile</c> prints, and what a bench harness can call).
/// </summary>
public static class ProfileRun
{
    /// <summary>Whether <paramref name="options"/>' workload trains (gradients, optimizer) or only infers.</summary>
    internal static ComputeUse Use(ProfileOptions options) =>
        options.What is ProfileWorkload.Train or ProfileWorkload.Lora ? ComputeUse.Training : ComputeUse.Inference;

    /// <summary>Profiles the workload <paramref name="options"/> describe.</summary>
    /// <param name="options">The workload and where it runs.</param>
    /// <param name="progress">Told each stage ("loading", "warm-up", "measured step").</param>
    /// <exception cref="Phi2Exception">Bad options (the message names the option), a model folder that cannot be read, or a device that cannot be opened.</exception>
    public static ProfileReport Run(ProfileOptions options, IProgress<string>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        Check(options);
        using var compute = ComputeBackend.Open(options.Device, options.DType, Use(options));
        return Run(options, compute, progress);
    }

    /// <summary>Profiles on a backend the caller opened and still owns (tests set its device's switches first).</summary>
    internal static ProfileReport Run(ProfileOptions options, ComputeBackend compute, IProgress<string>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        Check(options);
        progress?.Report("loading");
        using var model = Load(options, compute.Backend);
        var config = model.Config;
        using var lora = options.What == ProfileWorkload.Lora
            ? LoraModel.Create(model, TrainingSelection.Build(TaskPreset.Get(options.Preset).Modules, [], null, r: 16, alpha: 32, dropout: 0))
            : null;
        if (options.What == ProfileWorkload.Train) model.SetRequiresGrad(true);
        var trainable = lora?.TrainableParameters().ToList() ?? (options.What == ProfileWorkload.Train ? model.Parameters().ToList() : []);
        using var optimizer = trainable.Count > 0 ? new AdamW(trainable) : null;
        var random = new Random(2);
        int[] tokens = Enumerable.Range(0, options.Batch * options.Sequence).Select(_ => random.Next(config.VocabSize)).ToArray();
        int[] next = Enumerable.Range(0, options.Batch).Select(_ => random.Next(config.VocabSize)).ToArray();

        progress?.Report("warm-up");
        // The graph's replay runs outside every module scope; --model-at repeats layers by module, so the replayed
        // operations take the modules of the eager step they were captured from (the graph's warm-up, recorded).
        IReadOnlyList<ProfileEvent>? eagerToken = null;
        using var graphDecode = options.What == ProfileWorkload.Decode && options.CudaGraphs
            ? GraphDecode.Start(model, options.Batch, tokens, next, options.ModelAt is not null, out eagerToken) : null;
        if (graphDecode is null) Step(options, model, optimizer, tokens, next, recorder: null);
        progress?.Report("measured step");
        (compute.Backend as Backends.Cuda.CudaBackend)?.Synchronize();   // the warm-up's work is not the measured step's
        using var recorder = ProfileRecorder.Start(options.CountTraffic);
        if (graphDecode is not null)
            using (ProfileScope.Phase(ProfilePhase.Forward)) graphDecode.Token();
        else Step(options, model, optimizer, tokens, next, recorder);
        recorder.Dispose();   // reads the GPU's event pairs, which waits for the step: no Synchronize is counted

        long loraParameters = trainable.Where(_ => lora is not null).Sum(p => p.ElementCount);
        IReadOnlyList<ProfileEvent> events = recorder.Events;
        int batch = options.Batch, sequence = options.Sequence;
        if (eagerToken is not null) events = GraphDecode.Attribute(events, eagerToken);
        if (options.ModelAt is { } at)
        {
            long trained = trainable.Sum(p => p.ElementCount), toTrained = TrainedElementsAt(trainable, config.NumHiddenLayers, at.Layers);
            events = ProfileScaling.Scale(events, batch, sequence, config.NumHiddenLayers, at.Batch, at.Sequence, at.Layers,
                options.What == ProfileWorkload.Decode, trained > 0 ? (double)toTrained / trained : 1);
            if (lora is not null) loraParameters = toTrained;
            (batch, sequence, config) = (at.Batch, at.Sequence, config with { NumHiddenLayers = at.Layers });
        }
        var (tokenCount, flops) = options.What switch
        {
            ProfileWorkload.Train => ((long)batch * sequence, ModelFlops.Train(config, batch, sequence)),
            ProfileWorkload.Lora => ((long)batch * sequence, ModelFlops.Lora(config, batch, sequence, loraParameters)),
            ProfileWorkload.Prefill => ((long)batch * sequence, ModelFlops.Prefill(config, batch, sequence)),
            _ => ((long)batch, ModelFlops.Decode(config, batch, sequence)),
        };
        return new ProfileReport(options.Device.ToString(), options.What.ToString().ToLowerInvariant(), batch, sequence, tokenCount, flops,
            events, options.ModelAt is null ? recorder.PeakBytesInUse : new Dictionary<ProfilePhase, long>());
    }

    // The trained elements at another depth: a layer's (named model.layers.N..., or PEFT's base_model.model.model.layers.N...)
    // repeat with the layers, the rest (embed_tokens, lm_head, the final LayerNorm) stay.
    private static long TrainedElementsAt(IReadOnlyList<Tensor> trainable, int layers, int toLayers)
    {
        long inLayers = trainable.Where(p => p.Name?.Contains("model.layers.", StringComparison.Ordinal) == true).Sum(p => p.ElementCount);
        return trainable.Sum(p => p.ElementCount) - inLayers + inLayers * toLayers / layers;
    }

    private static void Check(ProfileOptions options)
    {
        if (options.Batch < 1) throw new Phi2Exception($"--batch must be at least 1, got {options.Batch}");
        if (options.Sequence < 2) throw new Phi2Exception($"--seq must be at least 2, got {options.Sequence}");
        if (options.Layers is < 1) throw new Phi2Exception($"--layers must be at least 1, got {options.Layers}");
        if (options.CudaGraphs && (options.What != ProfileWorkload.Decode || options.Device.Kind == DeviceKind.Cpu))
            throw new Phi2Exception("--cuda-graphs profiles a decoded token on a CUDA device (--what decode with --device cuda or emulated)");
        if (options.Layers is not null && options.ModelDirectory is not null)
            throw new Phi2Exception("--layers takes a config's widths with random weights (--config); a --model folder keeps its own layers");
        _ = TaskPreset.Get(options.Preset);
    }

    private static Phi2Model Load(ProfileOptions options, IBackend backend)
    {
        if (options.ModelDirectory is not null) return ModelSource.LoadModel(options.ModelDirectory, backend, options.DType);
        if (options.Config is null && options.Layers is null) return ModelSource.LoadModel(null, backend, options.DType);
        var config = options.Config ?? ModelSource.LoadConfig(null);
        if (options.Layers is { } layers) config = config with { NumHiddenLayers = layers };
        return Phi2Model.CreateRandom(config, backend, seed: 1, options.DType);
    }

    // One step of the workload; the phases are opened here (the tape opens backward's itself).
    private static void Step(ProfileOptions options, Phi2Model model, AdamW? optimizer, int[] tokens, int[] next, ProfileRecorder? recorder)
    {
        using var scope = TensorScope.Begin();
        switch (options.What)
        {
            case ProfileWorkload.Train or ProfileWorkload.Lora:
            {
                model.Training = true;
                using var tape = GradientTape.Begin();
                Tensor loss;
                using (ProfileScope.Phase(ProfilePhase.Forward))
                    loss = model.ForwardLoss(model.CreateInputIds(tokens, options.Batch), tokens);
                tape.Backward(loss);
                // The Trainer's step: the check (losses, norm, clip scale) and the update queued on the device, the status read once.
                using (ProfileScope.Phase(ProfilePhase.Optimizer))
                {
                    var parameters = optimizer!.Parameters;
                    using var status = new StepStatus(parameters[0].Backend);
                    GradientCheckOp.Measure(parameters.Select(p => p.Grad).ToList(), [loss], 1.0, status);
                    optimizer.Step(status);
                    optimizer.CompleteStep(status.Read());
                    optimizer.ZeroGrad();
                }
                break;
            }
            case ProfileWorkload.Prefill:
            {
                model.Training = false;
                KeyValueCache cache;
                using (Pause(recorder)) cache = new KeyValueCache(model, options.Batch, options.Sequence);   // setup, not the prefill's work
                using var owned = cache;
                using (ProfileScope.Phase(ProfilePhase.Forward))
                    model.ForwardLast(model.CreateInputIds(tokens, options.Batch), cache);
                break;
            }
            default:
            {
                model.Training = false;
                // The cache and the prefill are not the measured work: the recorder is paused around them.
                KeyValueCache cache;
                using (Pause(recorder))
                {
                    cache = new KeyValueCache(model, options.Batch, options.Sequence + 1);
                    model.ForwardLast(model.CreateInputIds(tokens, options.Batch), cache);
                }
                using var owned = cache;
                using (ProfileScope.Phase(ProfilePhase.Forward))
                    model.ForwardLast(model.CreateInputIds(next, options.Batch), cache);
                break;
            }
        }
    }

    private static IDisposable? Pause(ProfileRecorder? recorder) => recorder?.Pause();

    // Greedy decoding as generation runs it on a CUDA device: a prefill, then Text.DecodeGraph's steps (its eager warm-up,
    // the capture and first replay); Token() replays it once more, feeding back the ids the device chose.
    private sealed class GraphDecode : IDisposable
    {
        private readonly KeyValueCache _cache;
        private readonly Text.DecodeGraph _graph;
        private int[] _next;

        private GraphDecode(KeyValueCache cache, Text.DecodeGraph graph, int[] next) => (_cache, _graph, _next) = (cache, graph, next);

        public static GraphDecode Start(Phi2Model model, int batch, int[] tokens, int[] next, bool recordWarmUp, out IReadOnlyList<ProfileEvent>? warmUp)
        {
            warmUp = null;
            model.Training = false;
            var cache = new KeyValueCache(model, batch, tokens.Length / batch + 4);
            try
            {
                using (TensorScope.Begin())
                {
                    model.ForwardLast(model.CreateInputIds(tokens, batch), cache);
                }
                var graph = new Text.DecodeGraph(model, cache, greedy: true);
                var decode = new GraphDecode(cache, graph, next);
                using (var recorder = recordWarmUp ? ProfileRecorder.Start(countTraffic: false) : null)
                {
                    decode.Token();   // the graph's first step runs eagerly (the capture's warm-up)
                    recorder?.Dispose();
                    warmUp = recorder?.Events;
                }
                decode.Token();   // the capture, and its first replay
                return decode;
            }
            catch
            {
                cache.Dispose();
                throw;
            }
        }

        public void Token() => _next = _graph.Step(_next).Chosen!;

        /// <summary>
        /// The replay's events with each operation attributed to the module of the eager step's operation at its place:
        /// the graph holds the eager step's kernels and GEMMs in order, so their names must agree one for one.
        /// </summary>
        /// <exception cref="Phi2Exception">The two sequences differ (the capture is not the eager step).</exception>
        public static IReadOnlyList<ProfileEvent> Attribute(IReadOnlyList<ProfileEvent> replay, IReadOnlyList<ProfileEvent> eager)
        {
            static bool Operation(ProfileEvent e) => e.Kind is ProfileEventKind.Kernel or ProfileEventKind.Blas or ProfileEventKind.CopyOnDevice;
            var origins = eager.Where(Operation).ToList();
            var attributed = new List<ProfileEvent>(replay.Count);
            int next = 0;
            foreach (var e in replay)
            {
                if (!e.InGraph || !Operation(e)) { attributed.Add(e); continue; }
                if (next >= origins.Count || origins[next].Name != e.Name)
                    throw new Phi2Exception($"--model-at with --cuda-graphs: the graph's operation {next} is {e.Name}, the eager token's is " +
                                            $"{(next < origins.Count ? origins[next].Name : "missing")}; the replay cannot be attributed to layers");
                attributed.Add(new ProfileEvent(e, origins[next++]));
            }
            return attributed;
        }

        public void Dispose()
        {
            _graph.Dispose();
            _cache.Dispose();
        }
    }
}
