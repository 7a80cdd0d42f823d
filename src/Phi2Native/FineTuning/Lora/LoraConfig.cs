namespace Phi2Native.FineTuning.Lora;

/// <summary>
/// A LoRA configuration with HF PEFT's meaning (so adapters move between this engine and PEFT): which modules get
/// low-rank adapters, their rank and scaling, and which modules train in full.
/// </summary>
public sealed record LoraConfig
{
    /// <summary>Rank r of A [r, in] and B [out, r]; must be positive.</summary>
    public int R { get; init; } = 8;

    /// <summary>lora_alpha: the update is scaled by alpha / r (alpha / sqrt(r) with rsLoRA).</summary>
    public double Alpha { get; init; } = 16;

    /// <summary>Dropout on a Linear adapter's input, in training only (embeddings have none).</summary>
    public double Dropout { get; init; }

    /// <summary>
    /// PEFT's target_modules as a list: an entry matches a module whose full name equals it or ends with "." + it
    /// (e.g. "q_proj", "mlp.fc1", "model.embed_tokens"). Ignored when <see cref="TargetModulesRegex"/> is set.
    /// </summary>
    public IReadOnlyList<string> TargetModules { get; init; } = [];

    /// <summary>PEFT's target_modules as a single string: a regex that must match a module's whole name.</summary>
    public string? TargetModulesRegex { get; init; }

    /// <summary>
    /// PEFT's layers_to_transform: when set, a module matched by suffix must sit inside model.layers.{i} with i in
    /// the list; a module named by its full name is taken regardless.
    /// </summary>
    public IReadOnlyList<int>? LayersToTransform { get; init; }

    /// <summary>Modules trained in full (every parameter, bias included), e.g. "lm_head"; a module named here is never LoRA-wrapped.</summary>
    public IReadOnlyList<string> ModulesToSave { get; init; } = [];

    /// <summary>rsLoRA: scale by alpha / sqrt(r) instead of alpha / r.</summary>
    public bool UseRsLora { get; init; }

    /// <summary>The factor applied to B A.</summary>
    public double Scaling => UseRsLora ? Alpha / Math.Sqrt(R) : Alpha / R;

    /// <summary>Checks the values; the message names the field.</summary>
    /// <exception cref="Phi2Exception">r is not positive, alpha is not finite, dropout is outside [0, 1) (or NaN), or no targets are given.</exception>
    public void Validate()
    {
        if (R <= 0) throw new Phi2Exception($"LoRA r must be a positive integer, got {R}");
        if (!double.IsFinite(Alpha)) throw new Phi2Exception($"lora_alpha must be a finite number, got {Alpha}");
        if (!NumberChecks.IsProbability(Dropout)) throw new Phi2Exception($"lora_dropout must be in [0, 1), got {Dropout}");
        if (TargetModules.Count == 0 && TargetModulesRegex is null && ModulesToSave.Count == 0)
            throw new Phi2Exception("the LoRA configuration trains nothing: give target_modules or modules_to_save");
    }
}
