using Phi2Native.Text;

namespace Phi2Native.Embedded;

/// <summary>
/// What <see cref="EmbeddedLoraDemo"/> trains and how: a task preset's LoRA targets on a layer range of the pretrained
/// base, the LoRA rank and alpha, the training settings on Exodus, and the prompt both models continue. The defaults are
/// the run bench/RESULTS.md ("phi2 demo") records.
/// </summary>
public sealed record LoraDemoSettings
{
    /// <summary>A preset of the task table (<see cref="FineTuning.Selection.TaskPreset"/>) whose modules get adapters;
    /// one without embed_tokens, so the layer range decides where backward stops.</summary>
    public string Preset { get; init; } = "update-knowledge";

    /// <summary>The decoder layers that get adapters, as <c>--layers</c> writes them ("2-3", "1,3", "all").</summary>
    public string Layers { get; init; } = "2-3";

    /// <summary>LoRA rank r.</summary>
    public int Rank { get; init; } = 8;

    /// <summary>LoRA alpha (the adapters' output is scaled by alpha / r).</summary>
    public double Alpha { get; init; } = 16;

    /// <summary>Batches, learning rate, schedule, steps and data seed of the fine-tuning on Exodus.</summary>
    public EmbeddedTrainingSettings Training { get; init; } = new()
    {
        BatchSize = 8, MaxLength = 128, LearningRate = 1e-2, WarmupSteps = 10, Steps = 200, WeightDecay = 0, MaxGradientNorm = 1.0, DataSeed = 42,
    };

    /// <summary>Validation passes on Exodus's held-out chapters during training, for the curve (at least 1).</summary>
    public int Validations { get; init; } = 4;

    /// <summary>The text both the base and base + adapter continue.</summary>
    public string Prompt { get; init; } = "And the LORD said unto Moses,";

    /// <summary>Tokens each continuation adds.</summary>
    public int MaxNewTokens { get; init; } = 40;

    /// <summary>How continuations are sampled; seeded, so both models draw from the same random stream.</summary>
    public SamplingOptions Sampling { get; init; } = new() { Temperature = 0.7, TopK = 40, Seed = 1 };

    /// <summary>Checks every value; the message names the <c>phi2 demo</c> option. NaN and infinities fail every check.</summary>
    /// <exception cref="Phi2Exception">A value is out of range.</exception>
    public void Validate()
    {
        ArgumentNullException.ThrowIfNull(Training);
        ArgumentNullException.ThrowIfNull(Sampling);
        if (Rank <= 0) throw new Phi2Exception($"--r must be positive, got {Rank}");
        if (!NumberChecks.IsFinitePositive(Alpha)) throw new Phi2Exception($"--alpha must be a finite number > 0, got {Alpha}");
        if (Training.Steps <= 0) throw new Phi2Exception($"--steps must be positive, got {Training.Steps}");
        if (Training.BatchSize <= 0) throw new Phi2Exception($"the batch size must be positive, got {Training.BatchSize}");
        int positions = EmbeddedDefault.Config.MaxPositionEmbeddings;
        if (Training.MaxLength < 2 || Training.MaxLength > positions)
            throw new Phi2Exception($"the row length must be from 2 to the model's {positions} positions, got {Training.MaxLength}");
        if (!NumberChecks.IsFinitePositive(Training.LearningRate)) throw new Phi2Exception($"--lr must be a finite number > 0, got {Training.LearningRate}");
        if (Validations <= 0) throw new Phi2Exception($"the number of validation passes must be positive, got {Validations}");
        // Refused before anything loads: the demo continues a text, and "" has none.
        if (string.IsNullOrEmpty(Prompt)) throw new Phi2Exception("--prompt is empty: the demo continues a text; give some");
        if (MaxNewTokens < 0) throw new Phi2Exception($"--max-tokens must not be negative, got {MaxNewTokens}");
        Sampling.Validate();
    }
}
