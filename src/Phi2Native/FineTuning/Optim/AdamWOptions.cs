using Phi2Native.Backends.Ops.Optimizer;
using Phi2Native.Tensors;

namespace Phi2Native.FineTuning.Optim;

/// <summary>
/// Hyper-parameters of <see cref="AdamW"/>, with torch.optim.AdamW's defaults, and the rule that picks which
/// parameters get weight decay.
/// </summary>
public sealed record AdamWOptions
{
    /// <summary>The base learning rate (a schedule multiplies it; see <see cref="LearningRateSchedule"/>). torch's default: 1e-3.</summary>
    public double LearningRate { get; init; } = 1e-3;

    /// <summary>Decay of the first moment. torch's default: 0.9.</summary>
    public double Beta1 { get; init; } = 0.9;

    /// <summary>Decay of the second moment. torch's default: 0.999.</summary>
    public double Beta2 { get; init; } = 0.999;

    /// <summary>Added to the root of the second moment. torch's default: 1e-8.</summary>
    public double Epsilon { get; init; } = 1e-8;

    /// <summary>Decoupled weight decay for the parameters <see cref="AppliesWeightDecay"/> selects. torch's default: 1e-2.</summary>
    public double WeightDecay { get; init; } = 1e-2;

    /// <summary>
    /// Takes a parameter's HF name and says whether it gets weight decay. Default: <see cref="DefaultAppliesWeightDecay"/>.
    /// </summary>
    public Func<string, bool> AppliesWeightDecay { get; init; } = DefaultAppliesWeightDecay;

    /// <summary>
    /// The HF Trainer's rule: every parameter gets weight decay except biases and the parameters of
    /// normalization layers (in Phi-2 <c>input_layernorm</c> and <c>final_layernorm</c>). Decaying a LayerNorm
    /// gain pulls it towards 0 rather than towards its natural value 1, and biases have no scale to regularize.
    /// LoRA matrices (<c>lora_A</c>, <c>lora_B</c>) and embeddings are decayed, as in HF.
    /// </summary>
    /// <param name="parameterName">An HF name, e.g. <c>model.layers.0.self_attn.q_proj.weight</c>.</param>
    public static bool DefaultAppliesWeightDecay(string parameterName)
    {
        ArgumentNullException.ThrowIfNull(parameterName);
        var segments = parameterName.Split('.');
        if (segments[^1].Equals("bias", StringComparison.OrdinalIgnoreCase)) return false;
        foreach (var segment in segments[..^1])
        {
            // Module names of normalization layers across HF models: layernorm, layer_norm, ln_f, rmsnorm, norm.
            if (segment.Contains("layernorm", StringComparison.OrdinalIgnoreCase) ||
                segment.Contains("layer_norm", StringComparison.OrdinalIgnoreCase) ||
                segment.Contains("rmsnorm", StringComparison.OrdinalIgnoreCase) ||
                segment.Equals("norm", StringComparison.OrdinalIgnoreCase) ||
                segment.Equals("ln", StringComparison.OrdinalIgnoreCase) ||
                segment.StartsWith("ln_", StringComparison.OrdinalIgnoreCase))
                return false;
        }
        return true;
    }

    /// <summary>The step arguments for a parameter, at <paramref name="learningRate"/> and its 1-based <paramref name="step"/>.</summary>
    internal AdamWStepArguments StepArguments(bool decays, double learningRate, int step) =>
        new(learningRate, Beta1, Beta2, Epsilon, decays ? WeightDecay : 0, step);

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> for values torch.optim.AdamW rejects.</summary>
    internal void Validate()
    {
        // Step 1 stands in for any step: the check is about the hyper-parameters.
        new AdamWStepArguments(LearningRate, Beta1, Beta2, Epsilon, WeightDecay, 1).Validate();
        ArgumentNullException.ThrowIfNull(AppliesWeightDecay);
    }
}
