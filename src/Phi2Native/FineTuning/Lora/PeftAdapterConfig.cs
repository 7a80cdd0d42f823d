using System.Text.Json;
using System.Text.Json.Nodes;

namespace Phi2Native.FineTuning.Lora;

/// <summary>
/// adapter_config.json as HF PEFT reads and writes it for a LoRA causal-LM adapter. Unknown keys are ignored (PEFT
/// versions add fields); settings that would change results and that this engine does not implement are errors.
/// </summary>
public static class PeftAdapterConfig
{
    /// <summary>The file name PEFT uses.</summary>
    public const string FileName = "adapter_config.json";

    /// <summary>Reads <paramref name="path"/>; every error names the file and the field.</summary>
    /// <exception cref="Phi2Exception">The file is missing or malformed, not a LoRA causal-LM adapter, or uses an unsupported setting.</exception>
    public static LoraConfig Read(string path)
    {
        if (!File.Exists(path)) throw new Phi2Exception($"{path}: no such file; a PEFT adapter folder holds {FileName} and adapter_model.safetensors");
        JsonObject root;
        try
        {
            root = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new Phi2Exception($"{path}: expected a JSON object");
        }
        catch (JsonException e)
        {
            throw new Phi2Exception($"{path}: not valid JSON ({e.Message})", e);
        }
        string? Text(string key) => root[key] is JsonValue v && v.TryGetValue(out string? s) ? s : root[key] is null ? null
            : throw new Phi2Exception($"{path}: {key} must be a string, got {root[key]!.ToJsonString()}");
        bool Flag(string key) => root[key] switch
        {
            null => false,
            JsonValue v when v.TryGetValue(out bool b) => b,
            var other => throw new Phi2Exception($"{path}: {key} must be true or false, got {other.ToJsonString()}"),
        };
        double Number(string key, double? fallback)
        {
            if (root[key] is JsonValue v && v.TryGetValue(out double d)) return d;
            if (root[key] is null && fallback is { } f) return f;
            throw new Phi2Exception($"{path}: {key} must be a number{(root[key] is null ? " and is missing" : $", got {root[key]!.ToJsonString()}")}");
        }
        List<string> Strings(string key) => root[key] switch
        {
            null => [],
            JsonArray array => array.Select(item => item is JsonValue v && v.TryGetValue(out string? s) ? s
                : throw new Phi2Exception($"{path}: {key} must be a list of strings")).ToList(),
            _ => throw new Phi2Exception($"{path}: {key} must be a list of strings or null"),
        };
        void RequireEmpty(string key, string why)
        {
            if (root[key] is JsonObject { Count: > 0 } or JsonArray { Count: > 0 })
                throw new Phi2Exception($"{path}: a non-empty {key} is not supported ({why}); remove it or train without it");
        }

        if (Text("peft_type") is { } type && type != "LORA") throw new Phi2Exception($"{path}: peft_type \"{type}\" is not supported (expected \"LORA\")");
        if (Text("task_type") is { } task && task != "CAUSAL_LM") throw new Phi2Exception($"{path}: task_type \"{task}\" is not supported (expected \"CAUSAL_LM\")");
        if (Flag("use_dora")) throw new Phi2Exception($"{path}: use_dora true is not supported (DoRA changes the forward); use a plain LoRA adapter");
        RequireEmpty("rank_pattern", "per-module ranks");
        RequireEmpty("alpha_pattern", "per-module alphas");
        if (Text("bias") is { } bias && bias != "none") throw new Phi2Exception($"{path}: bias \"{bias}\" is not supported (expected \"none\")");
        if (Flag("fan_in_fan_out")) throw new Phi2Exception($"{path}: fan_in_fan_out true is not supported (Phi-2's Linear weights are [out, in])");
        if (Flag("lora_bias")) throw new Phi2Exception($"{path}: lora_bias true is not supported (a bias on lora_B)");
        if (Flag("use_qalora")) throw new Phi2Exception($"{path}: use_qalora true is not supported");
        if (root["target_parameters"] is JsonArray { Count: > 0 }) throw new Phi2Exception($"{path}: target_parameters is not supported");
        if (root["trainable_token_indices"] is not null) throw new Phi2Exception($"{path}: trainable_token_indices is not supported");
        if (root["exclude_modules"] is JsonArray { Count: > 0 } or JsonValue) throw new Phi2Exception($"{path}: exclude_modules is not supported");
        if (root["layer_replication"] is not null) throw new Phi2Exception($"{path}: layer_replication is not supported");
        if (Text("layers_pattern") is { } pattern && pattern != "layers")
            throw new Phi2Exception($"{path}: layers_pattern \"{pattern}\" is not supported (Phi-2's layers are model.layers.N)");

        List<int>? layers = root["layers_to_transform"] switch
        {
            null => null,
            JsonValue v when v.TryGetValue(out int single) => [single],
            JsonArray array => array.Select(item => item is JsonValue v && v.TryGetValue(out int i) ? i
                : throw new Phi2Exception($"{path}: layers_to_transform must be a list of integers")).ToList(),
            var other => throw new Phi2Exception($"{path}: layers_to_transform must be an integer or a list of integers, got {other.ToJsonString()}"),
        };
        double rank = Number("r", null);
        if (rank != Math.Floor(rank)) throw new Phi2Exception($"{path}: r must be an integer, got {rank}");
        var config = new LoraConfig
        {
            R = (int)rank,
            Alpha = Number("lora_alpha", null),
            Dropout = Number("lora_dropout", 0),
            TargetModules = root["target_modules"] is JsonValue ? [] : Strings("target_modules"),
            TargetModulesRegex = root["target_modules"] is JsonValue ? Text("target_modules") : null,
            LayersToTransform = layers is { Count: > 0 } ? layers : null,
            ModulesToSave = Strings("modules_to_save"),
            UseRsLora = Flag("use_rslora"),
        };
        try
        {
            config.Validate();
        }
        catch (Phi2Exception e)
        {
            throw new Phi2Exception($"{path}: {e.Message}", e);
        }
        return config;
    }

    /// <summary>
    /// The JSON PEFT 0.18 writes for <paramref name="config"/>: its full key set, sorted, indented by 2, inference_mode true.
    /// </summary>
    public static string ToJson(LoraConfig config, string? baseModelNameOrPath)
    {
        JsonArray Strings(IEnumerable<string> values) => new(values.Select(v => (JsonNode?)v).ToArray());
        var root = new JsonObject
        {
            ["alora_invocation_tokens"] = null,
            ["alpha_pattern"] = new JsonObject(),
            ["arrow_config"] = null,
            ["auto_mapping"] = null,
            ["base_model_name_or_path"] = baseModelNameOrPath,
            ["bias"] = "none",
            ["corda_config"] = null,
            ["ensure_weight_tying"] = false,
            ["eva_config"] = null,
            ["exclude_modules"] = null,
            ["fan_in_fan_out"] = false,
            ["inference_mode"] = true,
            ["init_lora_weights"] = true,
            ["layer_replication"] = null,
            ["layers_pattern"] = null,
            ["layers_to_transform"] = config.LayersToTransform is { } layers ? new JsonArray(layers.Select(i => (JsonNode?)i).ToArray()) : null,
            ["loftq_config"] = new JsonObject(),
            ["lora_alpha"] = config.Alpha == Math.Floor(config.Alpha) && Math.Abs(config.Alpha) < 1e15 ? (long)config.Alpha : PythonFloat(config.Alpha),
            ["lora_bias"] = false,
            ["lora_dropout"] = PythonFloat(config.Dropout),
            ["megatron_config"] = null,
            ["megatron_core"] = "megatron.core",
            ["modules_to_save"] = config.ModulesToSave.Count > 0 ? Strings(config.ModulesToSave) : null,
            ["peft_type"] = "LORA",
            ["peft_version"] = "0.18.1",
            ["qalora_group_size"] = 16,
            ["r"] = config.R,
            ["rank_pattern"] = new JsonObject(),
            ["revision"] = null,
            // PEFT keeps target_modules as a set and writes it as a list in no particular order: sorted here.
            ["target_modules"] = config.TargetModulesRegex is { } regex ? regex : Strings(config.TargetModules.Order(StringComparer.Ordinal)),
            ["target_parameters"] = null,
            ["task_type"] = "CAUSAL_LM",
            ["trainable_token_indices"] = null,
            ["use_dora"] = false,
            ["use_qalora"] = false,
            ["use_rslora"] = config.UseRsLora,
        };
        return root.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    // Python's json writes floats with repr: "0.0", "0.05", "1e-05"; System.Text.Json would write "0" for 0.0.
    private static JsonNode PythonFloat(double value)
    {
        string text = value.ToString("R", System.Globalization.CultureInfo.InvariantCulture);
        if (!text.Contains('.') && !text.Contains('E')) text += ".0";
        return JsonNode.Parse(text.Replace("E", "e"))!;
    }
}
