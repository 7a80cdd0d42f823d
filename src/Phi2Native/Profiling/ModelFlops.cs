using Phi2Native.Models.Phi2;

namespace Phi2Native.Profiling;

/// <summary>
/// The model's flops for MFU, by one convention, stated here and beside every MFU figure: N is the parameters of the
/// matrix products (everything but the embedding table, which is a lookup; lm_head included), a multiply-add is 2 flops,
/// attention is causal (a position of a T-token sequence attends to T / 2 keys on average), per layer of width C:
/// <list type="bullet">
/// <item>full training step: 6N + 6 L C T per token (forward, activation and weight gradients; attention's q.k and p.v
/// forward 2 C T, backward 4 C T);</item>
/// <item>LoRA step over a frozen base: 4N + 6 P + 6 L C T per token, P the LoRA parameters r (in + out) summed over the
/// adapted Linears (forward and activation gradients of the base, never its weight gradients: about 4N, never 6N);</item>
/// <item>prefill of T tokens (the logits of the last position only): T (2 N_layers + 2 L C T) + 2 V C;</item>
/// <item>one decoded token after T: 2N + 4 L C T (it attends to every cached key).</item>
/// </list>
/// </summary>
public static class ModelFlops
{
    /// <summary>The convention in one line, for tables and JSON.</summary>
    public const string Convention =
        "model flops: train 6N + 6LCT per token, LoRA 4N + 6P + 6LCT, prefill T(2N_layers + 2LCT) + 2VC, decode 2N + 4LCT (N: matmul parameters, P: LoRA parameters)";

    /// <summary>N_layers: the parameters of every decoder layer (and the final LayerNorm).</summary>
    public static long LayerParameters(Phi2Config config) =>
        Phi2Model.ParameterShapes(config).Where(p => !p.Name.Contains("embed_tokens") && !p.Name.StartsWith("lm_head", StringComparison.Ordinal))
            .Sum(p => p.Shape.Aggregate(1L, (a, d) => a * d));

    /// <summary>N: N_layers plus lm_head.</summary>
    public static long MatmulParameters(Phi2Config config) => LayerParameters(config) + (long)config.VocabSize * (config.HiddenSize + 1);

    /// <summary>A full training step over <paramref name="batch"/> sequences of <paramref name="time"/> tokens.</summary>
    public static double Train(Phi2Config config, int batch, int time) =>
        (double)batch * time * (6.0 * MatmulParameters(config) + Attention(config, time, 6));

    /// <summary>A LoRA step, <paramref name="loraParameters"/> the adapters' parameters.</summary>
    public static double Lora(Phi2Config config, int batch, int time, long loraParameters) =>
        (double)batch * time * (4.0 * MatmulParameters(config) + 6.0 * loraParameters + Attention(config, time, 6));

    /// <summary>A prefill of <paramref name="time"/> tokens per sequence, logits of the last position only.</summary>
    public static double Prefill(Phi2Config config, int batch, int time) =>
        (double)batch * (time * (2.0 * LayerParameters(config) + Attention(config, time, 2)) + 2.0 * config.VocabSize * config.HiddenSize);

    /// <summary>One decoded token per sequence after <paramref name="context"/> cached positions.</summary>
    public static double Decode(Phi2Config config, int batch, int context) =>
        (double)batch * (2.0 * MatmulParameters(config) + Attention(config, context, 4));

    private static double Attention(Phi2Config config, int time, int factor) => (double)factor * config.NumHiddenLayers * config.HiddenSize * time;
}
