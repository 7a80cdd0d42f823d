using System.Text.RegularExpressions;

namespace Phi2Native.Models.Phi2;

/// <summary>
/// Maps the legacy "phi-msft" checkpoint layout onto HF names. The fused Wqkv [3C, C] holds all q rows, then all
/// k rows, then all v rows; it becomes q_proj, k_proj and v_proj by row ranges.
/// </summary>
internal static partial class PhiMsftNames
{
    /// <summary>One HF parameter taken from rows [RowStart, RowStart + RowCount) of a legacy tensor (all rows: RowCount = -1).</summary>
    public readonly record struct Part(string HfName, int RowStart, int RowCount);

    /// <summary>The HF parameters a legacy tensor supplies; empty when the name is not part of the layout.</summary>
    public static IReadOnlyList<Part> Map(string legacyName, int hiddenSize)
    {
        if (legacyName == "transformer.embd.wte.weight") return [new("model.embed_tokens.weight", 0, -1)];
        var head = HeadPattern().Match(legacyName);
        if (head.Success)
        {
            string target = head.Groups[1].Value == "ln" ? "model.final_layernorm" : "lm_head";
            return [new($"{target}.{head.Groups[2].Value}", 0, -1)];
        }
        var layer = LayerPattern().Match(legacyName);
        if (!layer.Success) return [];
        string prefix = $"model.layers.{layer.Groups[1].Value}", module = layer.Groups[2].Value, kind = layer.Groups[3].Value;
        return module switch
        {
            "ln" => [new($"{prefix}.input_layernorm.{kind}", 0, -1)],
            "mixer.Wqkv" =>
            [
                new($"{prefix}.self_attn.q_proj.{kind}", 0, hiddenSize),
                new($"{prefix}.self_attn.k_proj.{kind}", hiddenSize, hiddenSize),
                new($"{prefix}.self_attn.v_proj.{kind}", 2 * hiddenSize, hiddenSize),
            ],
            "mixer.out_proj" => [new($"{prefix}.self_attn.dense.{kind}", 0, -1)],
            "mlp.fc1" or "mlp.fc2" => [new($"{prefix}.{module}.{kind}", 0, -1)],
            _ => [],
        };
    }

    [GeneratedRegex(@"^transformer\.h\.(\d+)\.(ln|mixer\.Wqkv|mixer\.out_proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)$")]
    private static partial Regex LayerPattern();

    [GeneratedRegex(@"^lm_head\.(ln|linear)\.(weight|bias)$")]
    private static partial Regex HeadPattern();
}
