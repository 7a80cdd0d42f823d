using System.Text.Json;
using System.Text.Json.Nodes;

namespace Phi2Native.Models.Phi2;

/// <summary>Typed access to config.json fields; every error names the file and the field.</summary>
internal sealed class ConfigReader(JsonObject root, string source)
{
    public string Source => source;

    /// <summary>True when the key is present with a non-null value.</summary>
    public bool Has(string key) => root.TryGetPropertyValue(key, out var node) && node is not null;

    public int? Int(string key, bool required = true)
    {
        var node = Get(key, required);
        if (node is null) return null;
        if (node is JsonValue value && value.TryGetValue(out long whole) && whole is >= int.MinValue and <= int.MaxValue) return (int)whole;
        if (node is JsonValue v2 && v2.TryGetValue(out double d) && d == Math.Floor(d) && Math.Abs(d) <= int.MaxValue) return (int)d;
        throw new ModelConfigException($"{source}: {key} must be an integer, got {node.ToJsonString()}");
    }

    public double? Double(string key, bool required = true)
    {
        var node = Get(key, required);
        if (node is null) return null;
        if (node is JsonValue value && value.TryGetValue(out double d) && double.IsFinite(d)) return d;
        throw new ModelConfigException($"{source}: {key} must be a finite number, got {node.ToJsonString()}");
    }

    public bool? Bool(string key)
    {
        var node = Get(key, required: false);
        if (node is null) return null;
        if (node.GetValueKind() is JsonValueKind.True or JsonValueKind.False) return node.GetValue<bool>();
        throw new ModelConfigException($"{source}: {key} must be true or false, got {node.ToJsonString()}");
    }

    public string? String(string key, bool required = true)
    {
        var node = Get(key, required);
        if (node is null) return null;
        if (node.GetValueKind() == JsonValueKind.String) return node.GetValue<string>();
        throw new ModelConfigException($"{source}: {key} must be a string, got {node.ToJsonString()}");
    }

    public void RequireEqual(string key, string expected)
    {
        string? actual = String(key);
        if (actual != expected) throw new ModelConfigException($"{source}: {key} \"{actual}\" is not supported (expected \"{expected}\")");
    }

    private JsonNode? Get(string key, bool required)
    {
        root.TryGetPropertyValue(key, out var node);
        if (node is null && required) throw new ModelConfigException($"{source}: required field \"{key}\" is missing");
        return node;
    }
}
