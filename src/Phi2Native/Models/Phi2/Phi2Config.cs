using System.Text.Json;
using System.Text.Json.Nodes;

namespace Phi2Native.Models.Phi2;

/// <summary>
/// The hyper-parameters of a Phi-2-architecture model, read from a checkpoint's config.json: HF
/// <c>PhiForCausalLM</c> keys, or the legacy "phi-msft" keys (n_embd, n_head, ...). Every value that changes
/// the computation must be present: HF's class defaults are phi-1's, not Phi-2's.
/// </summary>
/// <remarks>Values for microsoft/phi-2 are given in each field's documentation.</remarks>
public sealed record Phi2Config
{
    /// <summary>V: embedding rows (51200 for Phi-2; 50295 are used).</summary>
    public required int VocabSize { get; init; }

    /// <summary>C: width of the residual stream (2560).</summary>
    public required int HiddenSize { get; init; }

    /// <summary>Width of the MLP (10240).</summary>
    public required int IntermediateSize { get; init; }

    /// <summary>Number of decoder layers (32).</summary>
    public required int NumHiddenLayers { get; init; }

    /// <summary>H: attention heads (32); keys and values have as many (no GQA).</summary>
    public required int NumAttentionHeads { get; init; }

    /// <summary>Longest sequence the model accepts (2048).</summary>
    public required int MaxPositionEmbeddings { get; init; }

    /// <summary>Rotated dims of each head: int(head_dim * partial_rotary_factor), truncated as HF does (32).</summary>
    public required int RotaryDim { get; init; }

    /// <summary>Rotary base (10000).</summary>
    public required double RopeTheta { get; init; }

    /// <summary>LayerNorm epsilon (1e-5).</summary>
    public required double LayerNormEps { get; init; }

    /// <summary>Dropout on each branch before the residual add, in training (0.1).</summary>
    public double ResidPdrop { get; init; }

    /// <summary>Dropout on the token embeddings, in training (0.0).</summary>
    public double EmbdPdrop { get; init; }

    /// <summary>Dropout on attention probabilities (0.0); other values are not supported in training.</summary>
    public double AttentionDropout { get; init; }

    /// <summary>Beginning-of-sequence token (50256), if the config names one.</summary>
    public int? BosTokenId { get; init; }

    /// <summary>End-of-sequence token (50256), if the config names one.</summary>
    public int? EosTokenId { get; init; }

    /// <summary>True when read from a legacy phi-msft config.</summary>
    public bool IsPhiMsft { get; init; }

    /// <summary>D: HiddenSize / NumAttentionHeads (80).</summary>
    public int HeadDim => HiddenSize / NumAttentionHeads;

    /// <summary>microsoft/phi-2's configuration.</summary>
    public static Phi2Config Phi2 { get; } = new()
    {
        VocabSize = 51200, HiddenSize = 2560, IntermediateSize = 10240, NumHiddenLayers = 32, NumAttentionHeads = 32,
        MaxPositionEmbeddings = 2048, RotaryDim = 32, RopeTheta = 10000, LayerNormEps = 1e-5, ResidPdrop = 0.1,
        BosTokenId = 50256, EosTokenId = 50256,
    };

    /// <summary>
    /// The built-in tiny model of the demo: Phi-2's structure (parallel block, partial rotary at factor 0.4, gelu_new,
    /// biased Linears) at dimensions a 2-core CPU runs in well under a second.
    /// </summary>
    public static Phi2Config Tiny { get; } = new()
    {
        VocabSize = 512, HiddenSize = 128, IntermediateSize = 512, NumHiddenLayers = 4, NumAttentionHeads = 4,
        MaxPositionEmbeddings = 256, RotaryDim = 12, RopeTheta = 10000, LayerNormEps = 1e-5, ResidPdrop = 0.1,
    };

    /// <summary>Reads and validates a config.json; <paramref name="warn"/> receives non-fatal remarks.</summary>
    /// <exception cref="ModelConfigException">The file is missing or malformed, a field is missing or inconsistent, or the model is not supported.</exception>
    public static Phi2Config Load(string path, Action<string>? warn = null)
    {
        if (!File.Exists(path)) throw new ModelConfigException($"{path}: no such file; a model folder needs a config.json");
        return Parse(File.ReadAllText(path), path, warn);
    }

    /// <summary>Parses and validates config.json text; <paramref name="source"/> names it in errors.</summary>
    public static Phi2Config Parse(string json, string source, Action<string>? warn = null)
    {
        JsonObject root;
        try
        {
            root = JsonNode.Parse(json) as JsonObject ?? throw new ModelConfigException($"{source}: expected a JSON object");
        }
        catch (JsonException e)
        {
            throw new ModelConfigException($"{source}: not valid JSON ({e.Message})", e);
        }
        var reader = new ConfigReader(root, source);
        bool legacy = reader.String("model_type", required: false) == "phi-msft" || root.ContainsKey("n_embd");
        var config = legacy ? ReadPhiMsft(reader) : ReadHf(reader);
        config.Validate(source, warn);
        return config;
    }

    private static Phi2Config ReadHf(ConfigReader r)
    {
        string? modelType = r.String("model_type", required: false);
        if (modelType is not null and not "phi")
            throw new ModelConfigException($"{r.Source}: model_type \"{modelType}\" is not a Phi-2 model (expected \"phi\" or \"phi-msft\")");
        r.RequireEqual("hidden_act", "gelu_new");
        if (r.Bool("qk_layernorm") == true) throw new ModelConfigException($"{r.Source}: qk_layernorm true is not supported (Phi-2 has none)");
        if (r.Bool("tie_word_embeddings") == true) throw new ModelConfigException($"{r.Source}: tie_word_embeddings true is not supported (Phi-2 unties lm_head)");
        if (r.Has("rope_scaling")) throw new ModelConfigException($"{r.Source}: rope_scaling is not supported; remove it or set it to null");
        int hidden = r.Int("hidden_size")!.Value, heads = r.Int("num_attention_heads")!.Value;
        int? kvHeads = r.Int("num_key_value_heads", required: false);
        if (kvHeads is { } kv && kv != heads)
            throw new ModelConfigException($"{r.Source}: num_key_value_heads {kv} differs from num_attention_heads {heads}; grouped-query attention is not supported");
        double factor = r.Double("partial_rotary_factor")!.Value;
        if (!(factor >= 0 && factor <= 1)) throw new ModelConfigException($"{r.Source}: partial_rotary_factor {factor} must be in [0, 1]");
        return new Phi2Config
        {
            VocabSize = r.Int("vocab_size")!.Value,
            HiddenSize = hidden,
            IntermediateSize = r.Int("intermediate_size")!.Value,
            NumHiddenLayers = r.Int("num_hidden_layers")!.Value,
            NumAttentionHeads = heads,
            MaxPositionEmbeddings = r.Int("max_position_embeddings")!.Value,
            // HF: int(partial_rotary_factor * head_dim), truncated; head_dim checked in Validate.
            RotaryDim = heads > 0 && hidden % heads == 0 ? (int)(factor * (hidden / heads)) : 0,
            RopeTheta = r.Double("rope_theta")!.Value,
            LayerNormEps = r.Double("layer_norm_eps")!.Value,
            ResidPdrop = r.Double("resid_pdrop", required: false) ?? 0,
            EmbdPdrop = r.Double("embd_pdrop", required: false) ?? 0,
            AttentionDropout = r.Double("attention_dropout", required: false) ?? 0,
            BosTokenId = r.Int("bos_token_id", required: false),
            EosTokenId = r.Int("eos_token_id", required: false),
        };
    }

    private static Phi2Config ReadPhiMsft(ConfigReader r)
    {
        if (r.String("activation_function", required: false) is { } act && act != "gelu_new")
            throw new ModelConfigException($"{r.Source}: activation_function \"{act}\" is not supported (expected \"gelu_new\")");
        int hidden = r.Int("n_embd")!.Value, heads = r.Int("n_head")!.Value;
        if (r.Int("n_head_kv", required: false) is { } kv && kv != heads)
            throw new ModelConfigException($"{r.Source}: n_head_kv {kv} differs from n_head {heads}; grouped-query attention is not supported");
        return new Phi2Config
        {
            VocabSize = r.Int("vocab_size")!.Value,
            HiddenSize = hidden,
            // n_inner: null (or absent) means 4 * n_embd.
            IntermediateSize = r.Int("n_inner", required: false) ?? 4 * hidden,
            NumHiddenLayers = r.Int("n_layer")!.Value,
            NumAttentionHeads = heads,
            MaxPositionEmbeddings = r.Int("n_positions")!.Value,
            RotaryDim = r.Int("rotary_dim")!.Value,
            RopeTheta = 10000,
            LayerNormEps = r.Double("layer_norm_epsilon")!.Value,
            ResidPdrop = r.Double("resid_pdrop", required: false) ?? 0,
            EmbdPdrop = r.Double("embd_pdrop", required: false) ?? 0,
            AttentionDropout = r.Double("attn_pdrop", required: false) ?? 0,
            IsPhiMsft = true,
        };
    }

    /// <summary>
    /// Caps on the sizes, far above Phi-2's (32 layers, C 2560, MLP 10240, V 51200, 2048 positions, 32 heads) and any
    /// model of its family, and on one weight matrix (within int.MaxValue elements, what a tensor's span can address):
    /// a corrupt or hostile config.json fails here, in one line, not by listing millions of parameter names or
    /// allocating terabytes.
    /// </summary>
    private const int MaxLayers = 1024, MaxHiddenSize = 65536, MaxIntermediateSize = 1 << 20, MaxHeads = 1024,
        MaxVocabulary = 1 << 24, MaxPositions = 1 << 20;

    /// <summary>
    /// Checks that the values describe a model this engine can run: every size positive and at most its cap (layers
    /// 1024, hidden size 65536, MLP width 1048576, heads 1024, vocabulary 16777216, positions 1048576, and at most
    /// 2147483647 elements in the embedding or an MLP matrix), the heads dividing the hidden size, the rotary dim, the
    /// floating values finite and in range.
    /// </summary>
    /// <exception cref="ModelConfigException">A value is out of range or inconsistent; the message names the field and its range.</exception>
    public void Validate(string source = "config", Action<string>? warn = null)
    {
        string Key(string hf, string msft) => IsPhiMsft ? msft : hf;
        void Size(int value, int cap, string hf, string msft)
        {
            if (value <= 0) throw new ModelConfigException($"{source}: {Key(hf, msft)} must be a positive integer, got {value}");
            if (value > cap)
                throw new ModelConfigException($"{source}: {Key(hf, msft)} {value} is more than this engine supports (at most {cap}); is the config corrupt?");
        }
        Size(VocabSize, MaxVocabulary, "vocab_size", "vocab_size");
        Size(HiddenSize, MaxHiddenSize, "hidden_size", "n_embd");
        Size(IntermediateSize, MaxIntermediateSize, "intermediate_size", "n_inner");
        Size(NumHiddenLayers, MaxLayers, "num_hidden_layers", "n_layer");
        Size(NumAttentionHeads, MaxHeads, "num_attention_heads", "n_head");
        Size(MaxPositionEmbeddings, MaxPositions, "max_position_embeddings", "n_positions");
        foreach (var (rows, what) in new[] { (VocabSize, Key("vocab_size", "vocab_size")), (IntermediateSize, Key("intermediate_size", "n_inner")) })
            if ((long)rows * HiddenSize > int.MaxValue)
                throw new ModelConfigException(
                    $"{source}: {what} x {Key("hidden_size", "n_embd")} = {(long)rows * HiddenSize} elements in one weight matrix is more than this engine supports (at most {int.MaxValue})");
        if (HiddenSize % NumAttentionHeads != 0)
            throw new ModelConfigException($"{source}: {Key("hidden_size", "n_embd")} {HiddenSize} is not divisible by {Key("num_attention_heads", "n_head")} {NumAttentionHeads}");
        if (RotaryDim < 0 || RotaryDim > HeadDim || RotaryDim % 2 != 0)
            throw new ModelConfigException($"{source}: the rotary dim {RotaryDim} ({Key("int(head_dim * partial_rotary_factor)", "rotary_dim")}) must be even and at most the head dim {HeadDim}");
        if (!NumberChecks.IsFinitePositive(RopeTheta)) throw new ModelConfigException($"{source}: rope_theta must be a finite number > 0, got {RopeTheta}");
        if (!NumberChecks.IsFinitePositive(LayerNormEps))
            throw new ModelConfigException($"{source}: {Key("layer_norm_eps", "layer_norm_epsilon")} must be a finite number > 0, got {LayerNormEps}");
        foreach (var (value, name) in new[] { (ResidPdrop, "resid_pdrop"), (EmbdPdrop, "embd_pdrop"), (AttentionDropout, Key("attention_dropout", "attn_pdrop")) })
            if (!NumberChecks.IsProbability(value)) throw new ModelConfigException($"{source}: {name} must be in [0, 1), got {value}");
        foreach (var (id, name) in new[] { (BosTokenId, "bos_token_id"), (EosTokenId, "eos_token_id") })
            if (id is { } token && (token < 0 || token >= VocabSize))
                warn?.Invoke($"{source}: {name} {token} lies outside the vocabulary of {VocabSize}; accepted (normal for a tiny test model), but it can never be generated");
    }
}
