using Phi2Native.Autograd;
using Phi2Native.Autograd.Ops;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Ops.Dropout;
using Phi2Native.Backends.Ops.Embeddings;
using Phi2Native.Backends.Ops.Loss;
using Phi2Native.Determinism;
using Phi2Native.Models.Modules;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Models.Phi2;

/// <summary>
/// Microsoft's Phi-2 (HF <c>PhiForCausalLM</c>): a decoder-only transformer. What is special about Phi-2, against a
/// Llama-style model:
/// <list type="bullet">
/// <item>the parallel block: one LayerNorm per layer feeds attention and the MLP side by side, and both outputs are
/// added to the residual stream (h + attn(ln(h)) + mlp(ln(h))); no second norm;</item>
/// <item>partial rotary: only the first rotary_dim = 0.4 x head_dim (32 of Phi-2's 80) dims of each head rotate, in the
/// half-split (GPT-NeoX) layout;</item>
/// <item>LayerNorm with bias, not RMSNorm; gelu_new (tanh approximation) in a plain two-layer MLP, not a gated one;</item>
/// <item>every Linear has a bias, lm_head included, and lm_head is not tied to the embedding.</item>
/// </list>
/// </summary>
/// <remarks>
/// The module tree is the checkpoint's: <c>model.embed_tokens</c>, <c>model.layers.{i}</c> (<c>input_layernorm</c>,
/// <c>self_attn.{q_proj,k_proj,v_proj,dense}</c>, <c>mlp.{fc1,fc2}</c>), <c>model.final_layernorm</c>, <c>lm_head</c>;
/// <see cref="Module.NamedModules"/> and <see cref="Module.NamedParameters"/> walk it with HF's names. Load a model
/// with Phi2Checkpoint.Load, or make a random one with <see cref="CreateRandom"/>.
/// </remarks>
public sealed class Phi2Model : Module
{
    private readonly ModuleGroup _decoder;
    private long _trainingForwards;
    private double? _residualDropoutOverride;

    /// <summary>Builds the model, asking <paramref name="weights"/> for each parameter by HF name and shape, in checkpoint order.</summary>
    public Phi2Model(Phi2Config config, IBackend backend, WeightSource weights) : base("")
    {
        config.Validate();
        Config = config;
        Backend = backend;
        EmbedTokens = new Embedding("model.embed_tokens", config.VocabSize, config.HiddenSize, weights);
        var layers = new ModuleList<Phi2DecoderLayer>("model.layers", config.NumHiddenLayers, (name, i) => new Phi2DecoderLayer(name, i, config, weights));
        Layers = layers;
        FinalLayerNorm = new LayerNorm("model.final_layernorm", config.HiddenSize, config.LayerNormEps, weights);
        _decoder = new ModuleGroup("model", EmbedTokens, layers, FinalLayerNorm);
        LmHead = new Linear("lm_head", config.HiddenSize, config.VocabSize, weights);
    }

    /// <summary>A model with random weights, initialized as HF does (normal(0, 0.02) matrices and embeddings, zero
    /// biases, unit LayerNorms), reproducible from <paramref name="seed"/>.</summary>
    public static Phi2Model CreateRandom(Phi2Config config, IBackend backend, int seed, DType dtype = DType.F32) =>
        new(config, backend, RandomWeights.Initialize(backend, seed, dtype));

    /// <summary>The model's tree with every parameter's name and shape but no memory (see ShapeOnlyWeights): walk it, never run it.</summary>
    internal static Phi2Model CreateShapeOnly(Phi2Config config) =>
        new(config, CpuBackend.Default, ShapeOnlyWeights.For(CpuBackend.Default));

    /// <summary>The HF name and shape of every parameter a model of <paramref name="config"/> has, in checkpoint order.</summary>
    public static IReadOnlyList<(string Name, int[] Shape)> ParameterShapes(Phi2Config config)
    {
        using var model = CreateShapeOnly(config);
        return model.NamedParameters().Select(p => (p.Name, p.Parameter.Shape.ToArray())).ToList();
    }

    /// <summary>The hyper-parameters.</summary>
    public Phi2Config Config { get; }

    /// <summary>The dtype most weights had in the checkpoint this model was loaded from (null for a model built in memory).</summary>
    public DType? CheckpointDType { get; internal set; }

    /// <summary>The backend holding the weights and running the ops.</summary>
    public IBackend Backend { get; }

    /// <summary><c>model.embed_tokens</c> [V, C] (phi-msft: transformer.embd.wte).</summary>
    public Embedding EmbedTokens { get; }

    /// <summary><c>model.layers.{i}</c>.</summary>
    public IReadOnlyList<Phi2DecoderLayer> Layers { get; }

    /// <summary><c>model.final_layernorm</c> (phi-msft: lm_head.ln).</summary>
    public LayerNorm FinalLayerNorm { get; }

    /// <summary><c>lm_head</c> [V, C] with bias (phi-msft: lm_head.linear).</summary>
    public Linear LmHead { get; }

    /// <summary>What the forwards have computed so far (for tests and benchmarks).</summary>
    internal ForwardCounters Counters { get; } = new();

    /// <summary>Base seed of the dropout masks; each training forward derives fresh masks from it and a counter.</summary>
    public ulong DropoutSeed { get; set; } = 0x9E3779B97F4A7C15UL;

    /// <summary>Restarts the count of training forwards, so the next forward reuses the masks of the first one after <see cref="DropoutSeed"/> was set.</summary>
    public void ResetDropoutCounter() => Interlocked.Exchange(ref _trainingForwards, 0);

    /// <summary>Training forwards run so far: with <see cref="DropoutSeed"/> it fixes the next dropout masks (saved in checkpoints so a resumed run repeats them).</summary>
    public long TrainingForwardCount
    {
        get => Interlocked.Read(ref _trainingForwards);
        set => Interlocked.Exchange(ref _trainingForwards, value);
    }

    /// <summary>Replaces the config's resid_pdrop in training when set (e.g. 0 to fine-tune without dropout).</summary>
    /// <exception cref="ArgumentOutOfRangeException">Set to a value outside [0, 1), or NaN.</exception>
    public double? ResidualDropoutOverride
    {
        get => _residualDropoutOverride;
        set
        {
            if (value is { } p && !NumberChecks.IsProbability(p))
                throw new ArgumentOutOfRangeException(nameof(value), p, "the residual dropout probability must be in [0, 1)");
            _residualDropoutOverride = value;
        }
    }

    /// <summary>
    /// Checks <paramref name="ids"/> (row-major [batch, ids.Length / batch]) against the vocabulary and the maximum
    /// length, and puts them on the backend as an I32 tensor [B, T].
    /// </summary>
    /// <exception cref="ModelInputException">An id is outside [0, V), the length is not a multiple of the batch, or T exceeds max_position_embeddings.</exception>
    public Tensor CreateInputIds(ReadOnlySpan<int> ids, int batch = 1)
    {
        if (batch <= 0 || ids.Length == 0 || ids.Length % batch != 0)
            throw new ModelInputException($"{ids.Length} ids cannot form a batch of {batch} equal rows");
        int time = ids.Length / batch;
        if (time > Config.MaxPositionEmbeddings)
            throw new ModelInputException($"a sequence of {time} tokens is longer than this model's max_position_embeddings ({Config.MaxPositionEmbeddings})");
        for (int i = 0; i < ids.Length; i++)
            if (ids[i] < 0 || ids[i] >= Config.VocabSize)
                throw new ModelInputException($"token id {ids[i]} at position {i} is outside the vocabulary [0, {Config.VocabSize})");
        return Backend.FromBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(ids), DType.I32, [batch, time], DType.I32);
    }

    /// <summary>ids [B, T] (I32, from <see cref="CreateInputIds"/>) -> logits [B, T, V].</summary>
    public Tensor Forward(Tensor inputIds) => Logits(Hidden(inputIds));                 // [B, T, V]

    /// <summary>
    /// The causal-LM loss of <paramref name="inputIds"/> [B, T] against <paramref name="labels"/> (row-major [B, T]),
    /// as <see cref="CausalLanguageModelLoss"/> of <see cref="Forward(Tensor)"/>, with lm_head and the loss run together
    /// in chunks of rows (LinearCrossEntropyOp) so the [B x T, V] logits never exist whole; under a tape, forward also
    /// computes the head's gradients and backward only scales them.
    /// </summary>
    internal Tensor ForwardLoss(Tensor inputIds, ReadOnlySpan<int> labels, int chunkRows = 0)
    {
        var hidden = Hidden(inputIds);                                                // [B, T, C]
        int batch = inputIds.Size(0), time = inputIds.Size(1), rows = batch * time;
        var targets = ShiftedTargets(labels, batch, time, Config.VocabSize, $"input ids [{inputIds.ShapeText}]");
        var normed = FinalLayerNorm.Forward(hidden);
        // An adapter on lm_head (LoRA) changes its output after the base GEMM, which the fused op cannot see: the
        // unchunked path (whole logits) serves it, as it serves a dtype or training setup the fused op does not take.
        if (LmHead.Adapter is not null || !LinearCrossEntropyOp.CanServe(normed, LmHead.Weight, LmHead.Bias))
            return CausalLanguageModelLoss(LmHead.Forward(normed), labels);
        Counters.AddLogitRows(rows);
        using var profile = ProfileScope.Module(LmHead.Name);
        return LinearCrossEntropyOp.Apply(ReshapeOp.Apply(normed, rows, Config.HiddenSize), LmHead.Weight, LmHead.Bias, targets,
            CrossEntropyOp.DefaultIgnoreIndex, chunkRows);
    }

    /// <summary>ids [B, T] -> hidden [B, T, C] after the last layer, before the final LayerNorm.</summary>
    private Tensor Hidden(Tensor inputIds)
    {
        RequireInputIds(inputIds);
        if (Training && Config.AttentionDropout > 0)
            throw new Phi2Exception($"attention_dropout {Config.AttentionDropout} is not supported in training; set it to 0 in config.json");
        Counters.AddTokens((long)inputIds.Size(0) * inputIds.Size(1));
        ulong forwardSeed = Training ? Seeds.Derive(DropoutSeed, SeedPurpose.TrainingForward, Interlocked.Increment(ref _trainingForwards)) : 0;
        var hidden = EmbedTokens.Forward(inputIds);                                   // [B, T, C]
        if (Training && Config.EmbdPdrop > 0) hidden = DropoutOp.Apply(hidden, Config.EmbdPdrop, Seeds.Derive(forwardSeed, SeedPurpose.EmbeddingDropout, 0));
        double residualDropout = Training ? ResidualDropoutOverride ?? Config.ResidPdrop : 0;
        foreach (var layer in Layers)
        {
            if (GradientTape.Current != null)
            {
                hidden = layer.Forward(hidden, residualDropout, forwardSeed);
                continue;
            }
            // Inference: nothing is saved for backward, so a layer's intermediates are freed as soon as it is done.
            using var layerScope = TensorScope.Begin();
            hidden = layerScope.Keep(layer.Forward(hidden, residualDropout, forwardSeed));
        }
        return hidden;
    }

    /// <summary>
    /// Inference through a KV cache: ids [B, T] (I32) are the T tokens after the cache's Length t, at positions
    /// t .. t + T - 1 -> logits [B, T, V] of those positions only. The prefix is not recomputed: each layer attends
    /// over its cached keys and values plus the T new ones, which it appends. A prompt is prefilled with one call
    /// (T = prompt length), then each generation step passes one token (T = 1). Generation needs only the last
    /// position's logits: <see cref="ForwardLast"/> computes just those.
    /// </summary>
    /// <exception cref="ModelInputException">The ids are not [B, T] I32, B differs from the cache's, or t + T exceeds its capacity.</exception>
    /// <exception cref="InvalidOperationException">A gradient tape is recording, or the model is in training mode: the cache path saves nothing for backward.</exception>
    public Tensor Forward(Tensor inputIds, KeyValueCache cache) => Logits(CachedHidden(inputIds, cache));   // [B, T, V]

    /// <summary>
    /// <see cref="Forward(Tensor, KeyValueCache)"/> that runs the final LayerNorm and lm_head on one position per row
    /// only: position <paramref name="logitPositions"/>[b] (an index into the T new tokens) of row b -> logits [B, 1, V].
    /// Every position still goes through the layers and into the cache. For a prompt of T tokens this computes B rows
    /// of lm_head instead of B x T (Phi-2: 51200 x 2560 multiply-adds per row) and copies B x V logits to the host.
    /// </summary>
    /// <exception cref="ModelInputException">As <see cref="Forward(Tensor, KeyValueCache)"/>, or <paramref name="logitPositions"/>
    /// does not hold one index in [0, T) per row.</exception>
    /// <exception cref="InvalidOperationException">A gradient tape is recording, or the model is in training mode.</exception>
    public Tensor Forward(Tensor inputIds, KeyValueCache cache, ReadOnlySpan<int> logitPositions)
    {
        RequireInputIds(inputIds);
        int batch = inputIds.Size(0), time = inputIds.Size(1);
        if (logitPositions.Length != batch)
            throw new ModelInputException($"logitPositions: {logitPositions.Length} positions for a batch of {batch} rows; give one per row");
        for (int b = 0; b < batch; b++)
            if (logitPositions[b] < 0 || logitPositions[b] >= time)
                throw new ModelInputException($"logitPositions: row {b}'s position {logitPositions[b]} is outside the {time} new tokens [0, {time})");
        // Checked before anything runs, so a bad position leaves the cache as it was.
        var hidden = CachedHidden(inputIds, cache);                                   // [B, T, C]
        // One new token per row (a decode step): every row's only position is the one wanted, nothing to gather. This
        // keeps a decode step free of host uploads, so it can be captured as a CUDA graph.
        if (time == 1) return Logits(hidden);                                         // [B, 1, V]
        // Row b * T + p of the [B * T, C] hidden states, gathered as an embedding lookup: the indices are the host's.
        int[] rows = new int[batch];
        for (int b = 0; b < batch; b++) rows[b] = b * time + logitPositions[b];
        var indices = Backend.FromBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(rows.AsSpan()), DType.I32, [batch, 1], DType.I32);
        var last = EmbeddingOp.Forward(ReshapeOp.Apply(hidden, batch * time, Config.HiddenSize), indices);   // [B, 1, C]
        return Logits(last);                                                          // [B, 1, V]
    }

    /// <summary>
    /// <see cref="Forward(Tensor, KeyValueCache)"/> with the final LayerNorm and lm_head on the last of the T new
    /// positions only -> logits [B, 1, V]: what generation needs after a prefill or a decode step.
    /// </summary>
    /// <exception cref="ModelInputException">As <see cref="Forward(Tensor, KeyValueCache)"/>.</exception>
    /// <exception cref="InvalidOperationException">A gradient tape is recording, or the model is in training mode.</exception>
    public Tensor ForwardLast(Tensor inputIds, KeyValueCache cache)
    {
        RequireInputIds(inputIds);
        var last = new int[inputIds.Size(0)];
        Array.Fill(last, inputIds.Size(1) - 1);
        return Forward(inputIds, cache, last);
    }

    /// <summary>The layers through the cache: ids [B, T] -> hidden [B, T, C] before the final LayerNorm; advances the cache by T.</summary>
    private Tensor CachedHidden(Tensor inputIds, KeyValueCache cache)
    {
        ArgumentNullException.ThrowIfNull(cache);
        RequireInputIds(inputIds);
        if (GradientTape.Current != null || Training)
            throw new InvalidOperationException("the KV-cache forward is for inference only: stop the gradient tape and set Training = false");
        int batch = inputIds.Size(0), time = inputIds.Size(1);
        cache.EnsureRoom(batch, time);
        var hidden = EmbedTokens.Forward(inputIds);                                   // [B, T, C]
        foreach (var layer in Layers)
        {
            // Each layer's intermediates are freed when it is done; its keys and values live on in the cache.
            using var layerScope = TensorScope.Begin();
            hidden = layerScope.Keep(layer.Forward(hidden, 0, 0, cache));
        }
        cache.Advance(time);
        Counters.AddTokens((long)batch * time);
        return hidden;
    }

    /// <summary>hidden [..., C] -> logits [..., V]: the final LayerNorm and lm_head.</summary>
    private Tensor Logits(Tensor hidden)
    {
        Counters.AddLogitRows(hidden.ElementCount / Config.HiddenSize);
        return LmHead.Forward(FinalLayerNorm.Forward(hidden));
    }

    /// <summary>
    /// The causal-LM loss: mean cross-entropy of logits[:, :-1] against labels[:, 1:], leaving out positions whose
    /// label is -100. <paramref name="labels"/> is row-major [B, T] (usually the input ids themselves).
    /// </summary>
    public Tensor CausalLanguageModelLoss(Tensor logits, ReadOnlySpan<int> labels)
    {
        int batch = logits.Size(0), time = logits.Size(1), vocab = logits.Size(2);
        var targets = ShiftedTargets(labels, batch, time, vocab, $"logits [{logits.ShapeText}]");
        var targetTensor = Backend.FromBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(targets.AsSpan()), DType.I32, [batch * time], DType.I32);
        return CrossEntropyOp.Apply(ReshapeOp.Apply(logits, batch * time, vocab), targetTensor);
    }

    // Shift on the host: row (b, t) predicts labels[b, t + 1]; the last position of each row predicts nothing.
    private static int[] ShiftedTargets(ReadOnlySpan<int> labels, int batch, int time, int vocab, string against)
    {
        if (labels.Length != batch * time)
            throw new ModelInputException($"{labels.Length} labels for {against}: expected B x T = {batch * time}");
        var targets = new int[batch * time];
        for (int b = 0; b < batch; b++)
            for (int t = 0; t < time; t++)
            {
                int target = t + 1 < time ? labels[b * time + t + 1] : CrossEntropyOp.DefaultIgnoreIndex;
                if (target != CrossEntropyOp.DefaultIgnoreIndex && (target < 0 || target >= vocab))
                    throw new ModelInputException($"label {target} at row {b}, position {t + 1} is outside the vocabulary [0, {vocab}) and is not -100");
                targets[b * time + t] = target;
            }
        return targets;
    }

    private static void RequireInputIds(Tensor inputIds)
    {
        ArgumentNullException.ThrowIfNull(inputIds);
        if (inputIds.Rank != 2 || inputIds.DType != DType.I32)
            throw new ModelInputException($"input ids must be an I32 tensor [B, T], got [{inputIds.ShapeText}] {inputIds.DType}");
    }

    /// <inheritdoc/>
    protected override IEnumerable<Module> Children() => [_decoder, LmHead];
}
