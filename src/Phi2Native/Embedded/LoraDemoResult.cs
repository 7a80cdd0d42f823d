using Phi2Native.FineTuning.Lora;
using Phi2Native.FineTuning.Selection;
using Phi2Native.FineTuning.Training;

namespace Phi2Native.Embedded;

/// <summary>The figures of one <see cref="EmbeddedLoraDemo"/> run.</summary>
public sealed record LoraDemoResult
{
    /// <summary>The task preset whose modules got adapters.</summary>
    public required TaskPreset Preset { get; init; }

    /// <summary>The layers that got adapters.</summary>
    public required IReadOnlyList<int> Layers { get; init; }

    /// <summary>The PEFT configuration trained.</summary>
    public required LoraConfig Selection { get; init; }

    /// <summary>The lowest layer with an adapter.</summary>
    public required int LowestTrainedLayer { get; init; }

    /// <summary>Elements of the LoRA matrices (A and B of every adapted module): all that trains.</summary>
    public required long TrainableParameters { get; init; }

    /// <summary>Elements of the base model, every one frozen.</summary>
    public required long FrozenParameters { get; init; }

    /// <summary>Backward ops of one training step, with the frozen base and with everything trainable.</summary>
    public required BackwardWork Backward { get; init; }

    /// <summary>Mean loss per token on Exodus's held-out chapters, of the base.</summary>
    public required double ExodusLossBefore { get; init; }

    /// <summary>The same, of base + adapter.</summary>
    public required double ExodusLossAfter { get; init; }

    /// <summary>Mean loss per token on Genesis's held-out chapters (the base's own book), of the base.</summary>
    public required double GenesisLossBefore { get; init; }

    /// <summary>The same, of base + adapter.</summary>
    public required double GenesisLossAfter { get; init; }

    /// <summary>Tokens scored on Exodus's held-out chapters.</summary>
    public required long ExodusValidationTokens { get; init; }

    /// <summary>Tokens scored on Genesis's held-out chapters.</summary>
    public required long GenesisValidationTokens { get; init; }

    /// <summary>Packed rows of Exodus's training chapters.</summary>
    public required int ExodusTrainingRows { get; init; }

    /// <summary>The trainer's validation passes on Exodus's held-out chapters, step 0 first.</summary>
    public required IReadOnlyList<EvaluationMetrics> Curve { get; init; }

    /// <summary>Optimizer steps done.</summary>
    public required int Steps { get; init; }

    /// <summary>Seconds in training steps (validation not counted).</summary>
    public required double TrainingSeconds { get; init; }

    /// <summary>Seconds the training stage took in all, validation passes included.</summary>
    public required double WallSeconds { get; init; }

    /// <summary>The base's sampled continuation of the prompt.</summary>
    public required string BaseContinuation { get; init; }

    /// <summary>Base + adapter's continuation of the prompt, with the same seed.</summary>
    public required string AdaptedContinuation { get; init; }

    /// <summary>Relative change of the Exodus loss, (after - before) / before: -0.1 is a 10 % drop.</summary>
    public double ExodusChange => (ExodusLossAfter - ExodusLossBefore) / ExodusLossBefore;

    /// <summary>Relative change of the Genesis loss.</summary>
    public double GenesisChange => (GenesisLossAfter - GenesisLossBefore) / GenesisLossBefore;
}
