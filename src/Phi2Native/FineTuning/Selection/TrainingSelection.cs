using System.Globalization;
using Phi2Native.FineTuning.Lora;

namespace Phi2Native.FineTuning.Selection;

/// <summary>
/// Turns what a person asks for ("q_proj,v_proj", "attention", "layers 24-31", "train lm_head in full", a preset) into a
/// <see cref="LoraConfig"/> with PEFT's semantics, so that what trains is exactly what was asked.
/// </summary>
public static class TrainingSelection
{
    /// <summary>
    /// Module names a person may give for LoRA, and what each means in PEFT's terms (last name parts inside the layers,
    /// full names outside them): q_proj, self_attn.q_proj, attention, mlp, mlp.fc1, embed_tokens, model.embed_tokens,
    /// lm_head, ..., read off the model's module tree. Full training (<see cref="Build"/>'s fullModules) also takes the
    /// LayerNorms, which LoRA cannot adapt.
    /// </summary>
    public static IReadOnlyDictionary<string, string[]> Aliases { get; } = ModuleWords.All
        .Where(word => word.Value.All(m => m.TakesLora))
        .ToDictionary(word => word.Key, word => word.Value.Select(m => m.PeftName).ToArray(), StringComparer.Ordinal);

    // Short names and composites, then one example of a path inside a layer and of a full name outside the layers.
    private static string ValidNames(bool full)
    {
        var words = ModuleWords.All.Where(word => full || word.Value.All(m => m.TakesLora)).ToList();
        string path = words.First(w => w.Key.Contains('.') && w.Value.All(m => m.PathInLayer is not null)).Key;
        string fullName = words.First(w => w.Key.Contains('.') && w.Value.All(m => m.PathInLayer is null)).Key;
        return $"{string.Join(", ", words.Select(w => w.Key).Where(k => !k.Contains('.')))} (or with its path, e.g. {path}, {fullName})";
    }

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
            if (!ModuleWords.All.TryGetValue(name, out var meaning))
                throw new Phi2Exception($"unknown module \"{name}\" for full training; valid: {ValidNames(full: true)}");
            foreach (var module in meaning)
            {
                targets.Remove(module.PeftName);
                // PEFT's modules_to_save has no layer filter: with layers, name each layer's module in full instead.
                if (layers is null || module.PathInLayer is null) modulesToSave.Add(module.PeftName);
                else modulesToSave.AddRange(layers.Select(i => $"{ModuleWords.LayersName}.{i}.{module.PathInLayer}"));
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
}
