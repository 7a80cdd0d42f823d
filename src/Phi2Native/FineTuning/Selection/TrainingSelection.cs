using System.Globalization;
using Phi2Native.FineTuning.Lora;

namespace Phi2Native.FineTuning.Selection;

/// <summary>
/// Turns what a person asks for ("q_proj,v_proj", "attention", "layers 24-31", "train lm_head in full", a preset) into a
/// <see cref="LoraConfig"/> with PEFT's semantics, so that what trains is exactly what was asked.
/// </summary>
public static class TrainingSelection
{
    /// <summary>Module names a person may give, and what each means in PEFT's terms (suffixes of full module names).</summary>
    public static IReadOnlyDictionary<string, string[]> Aliases { get; } = new Dictionary<string, string[]>(StringComparer.Ordinal)
    {
        ["q_proj"] = ["q_proj"], ["k_proj"] = ["k_proj"], ["v_proj"] = ["v_proj"], ["dense"] = ["dense"],
        ["fc1"] = ["fc1"], ["fc2"] = ["fc2"], ["mlp.fc1"] = ["fc1"], ["mlp.fc2"] = ["fc2"],
        ["self_attn.q_proj"] = ["q_proj"], ["self_attn.k_proj"] = ["k_proj"], ["self_attn.v_proj"] = ["v_proj"], ["self_attn.dense"] = ["dense"],
        ["attention"] = ["q_proj", "k_proj", "v_proj", "dense"], ["self_attn"] = ["q_proj", "k_proj", "v_proj", "dense"],
        ["mlp"] = ["fc1", "fc2"],
        ["embed_tokens"] = ["model.embed_tokens"], ["model.embed_tokens"] = ["model.embed_tokens"],
        ["lm_head"] = ["lm_head"],
    };

    // Full training can also reach the LayerNorms, which LoRA cannot adapt.
    private static readonly Dictionary<string, string[]> FullOnly = new(StringComparer.Ordinal)
    {
        ["input_layernorm"] = ["input_layernorm"], ["final_layernorm"] = ["model.final_layernorm"],
        ["model.final_layernorm"] = ["model.final_layernorm"],
    };

    private static string ValidNames(bool full) =>
        string.Join(", ", Aliases.Keys.Concat(full ? FullOnly.Keys : []).Where(k => !k.StartsWith("self_attn.", StringComparison.Ordinal)));

    /// <summary>
    /// Builds the configuration. <paramref name="loraTargets"/> get adapters, <paramref name="fullModules"/> train in full;
    /// <paramref name="layers"/> restricts both to those decoder layers (embed_tokens, lm_head and final_layernorm lie
    /// outside the layers and are governed by the module lists alone).
    /// </summary>
    /// <exception cref="Phi2Exception">An unknown module name (the message lists the valid ones), a bad layer, or nothing to train.</exception>
    public static LoraConfig Build(IEnumerable<string> loraTargets, IEnumerable<string> fullModules, IReadOnlyList<int>? layers,
        int r = 8, double alpha = 16, double dropout = 0.05, bool useRsLora = false)
    {
        var targets = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var name in loraTargets)
            targets.UnionWith(Aliases.TryGetValue(name, out var meaning) ? meaning
                : throw new Phi2Exception($"unknown module \"{name}\" for LoRA; valid: {ValidNames(full: false)}"));
        var modulesToSave = new List<string>();
        foreach (var name in fullModules)
        {
            if (!Aliases.TryGetValue(name, out var meaning) && !FullOnly.TryGetValue(name, out meaning))
                throw new Phi2Exception($"unknown module \"{name}\" for full training; valid: {ValidNames(full: true)}");
            foreach (var suffix in meaning)
            {
                targets.Remove(suffix);
                bool outsideLayers = suffix is "model.embed_tokens" or "lm_head" or "model.final_layernorm";
                // PEFT's modules_to_save has no layer filter: name each layer's module in full instead.
                if (layers is null || outsideLayers) modulesToSave.Add(suffix);
                else modulesToSave.AddRange(layers.Select(i => $"model.layers.{i}.{ParentOf(suffix)}{suffix}"));
            }
        }
        var config = new LoraConfig
        {
            R = r, Alpha = alpha, Dropout = dropout, UseRsLora = useRsLora,
            TargetModules = targets.ToList(),
            LayersToTransform = layers,
            ModulesToSave = modulesToSave.Distinct().ToList(),
        };
        config.Validate();
        return config;
    }

    /// <summary>
    /// Parses "24-31", "0,2,5-7" or "all" against a model of <paramref name="layerCount"/> layers (null for "all").
    /// </summary>
    /// <exception cref="Phi2Exception">A malformed item or an index outside the model; the message gives the valid range.</exception>
    public static IReadOnlyList<int>? ParseLayers(string text, int layerCount)
    {
        if (string.IsNullOrWhiteSpace(text) || text.Trim() == "all") return null;
        var layers = new SortedSet<int>();
        foreach (var item in text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            var bounds = item.Split('-', StringSplitOptions.TrimEntries);
            if (bounds.Length is < 1 or > 2 || !bounds.All(b => int.TryParse(b, NumberStyles.None, CultureInfo.InvariantCulture, out _)))
                throw new Phi2Exception($"layers: \"{item}\" is not a layer index or range; write e.g. 24-31 or 0,2,5-7 (this model has layers 0-{layerCount - 1})");
            int first = int.Parse(bounds[0], CultureInfo.InvariantCulture), last = int.Parse(bounds[^1], CultureInfo.InvariantCulture);
            if (first > last)
                throw new Phi2Exception($"layers: \"{item}\" is reversed; write the lower layer first ({last}-{first})");
            if (last >= layerCount)
                throw new Phi2Exception($"layers: \"{item}\" is outside this model's layers 0-{layerCount - 1}");
            for (int i = first; i <= last; i++) layers.Add(i);
        }
        return layers.ToList();
    }

    private static string ParentOf(string suffix) => suffix switch
    {
        "q_proj" or "k_proj" or "v_proj" or "dense" => "self_attn.",
        "fc1" or "fc2" => "mlp.",
        _ => "",
    };
}
