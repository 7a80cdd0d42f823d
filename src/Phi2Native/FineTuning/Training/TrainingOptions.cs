using Phi2Native.FineTuning.Optim;

namespace Phi2Native.FineTuning.Training;

/// <summary>How a fine-tuning run trains. Defaults follow common LoRA practice for a small model.</summary>
public sealed record TrainingOptions
{
    /// <summary>Passes over the training data.</summary>
    public int Epochs { get; init; } = 1;

    /// <summary>Stop after this many optimizer steps, if set (before the epochs run out).</summary>
    public int? MaxSteps { get; init; }

    /// <summary>Micro-batches whose gradients are summed (each loss divided by this) before one optimizer step.</summary>
    public int GradientAccumulation { get; init; } = 1;

    /// <summary>Peak learning rate.</summary>
    public double LearningRate { get; init; } = 2e-4;

    /// <summary>Decoupled weight decay (AdamW), not applied to biases and LayerNorm weights.</summary>
    public double WeightDecay { get; init; }

    /// <summary>Optimizer steps of linear warmup from 0.</summary>
    public int WarmupSteps { get; init; }

    /// <summary>Decay after warmup.</summary>
    public LearningRateDecay Decay { get; init; } = LearningRateDecay.Cosine;

    /// <summary>Clip gradients to this global norm (a finite number &gt;= 0); 0 turns clipping off.</summary>
    public double MaxGradientNorm { get; init; } = 1.0;

    /// <summary>Replaces the config's resid_pdrop while training, if set.</summary>
    public double? ResidualDropout { get; init; }

    /// <summary>Seed of the dropout masks (data order has its own, in the batch loader).</summary>
    public int Seed { get; init; } = 42;

    /// <summary>Evaluate on the validation data every this many optimizer steps (0: at the end of each epoch).</summary>
    public int EvaluateEvery { get; init; }

    /// <summary>Write a checkpoint every this many optimizer steps (0: only at the end and on interruption).</summary>
    public int SaveEvery { get; init; }

    /// <summary>
    /// Also write a checkpoint when this many minutes have passed since the last one (a finite number &gt;= 0; 0: off),
    /// for machines that may be taken away; checked after each step.
    /// </summary>
    public double SaveEveryMinutes { get; init; }

    /// <summary>Keep at most this many step checkpoints, deleting the oldest (at least 1); null keeps all.</summary>
    public int? KeepCheckpoints { get; init; }

    /// <summary>
    /// Steps the run may skip when their loss or gradient is not finite (each updates nothing but consumes its batch
    /// and advances the schedule, as torch's GradScaler does); 0, the default, stops at the first such step.
    /// </summary>
    public int SkipNonFiniteSteps { get; init; }

    /// <summary>
    /// Read the steps' losses, gradient norms and non-finite checks from the device once every this many optimizer
    /// steps (at least 1; 1, the default, reads after every step), so the host waits once per window of steps. The run
    /// is the same bit for bit whatever the value: a step that is not finite halts the rest of its window on the
    /// device, and the halted steps run again after it. Saves, validations, cancellation and the last step end a
    /// window early; <see cref="Trainer.StepCompleted"/> is raised for each step of a window when it is read.
    /// </summary>
    public int MetricsEvery { get; init; } = 1;

    /// <summary>Checks the values; the message names the option and what it must be. NaN and infinities fail every check.</summary>
    /// <exception cref="Phi2Exception">A value is out of range.</exception>
    public void Validate()
    {
        void Positive(int value, string name)
        {
            if (value <= 0) throw new Phi2Exception($"{name} must be positive, got {value}");
        }
        Positive(Epochs, "--epochs");
        Positive(GradientAccumulation, "--grad-accum");
        if (MaxSteps is { } max) Positive(max, "--max-steps");
        if (!NumberChecks.IsFinitePositive(LearningRate)) throw new Phi2Exception($"--lr must be a finite number > 0, got {LearningRate}");
        if (!NumberChecks.IsFiniteNonNegative(WeightDecay)) throw new Phi2Exception($"--weight-decay must be a finite number >= 0 (0: none), got {WeightDecay}");
        if (!NumberChecks.IsFiniteNonNegative(MaxGradientNorm))
            throw new Phi2Exception($"--max-grad-norm must be a finite number >= 0 (0: no clipping), got {MaxGradientNorm}");
        if (WarmupSteps < 0) throw new Phi2Exception($"--warmup must not be negative, got {WarmupSteps}");
        if (ResidualDropout is { } dropout && !NumberChecks.IsProbability(dropout))
            throw new Phi2Exception($"--resid-dropout must be in [0, 1), got {dropout}");
        if (EvaluateEvery < 0 || SaveEvery < 0) throw new Phi2Exception("--eval-every and --save-every must not be negative");
        if (!NumberChecks.IsFiniteNonNegative(SaveEveryMinutes))
            throw new Phi2Exception($"--save-every-minutes must be a finite number >= 0 (0: off), got {SaveEveryMinutes}");
        if (KeepCheckpoints is { } keep && keep < 1) throw new Phi2Exception($"--keep-checkpoints must be at least 1 (the newest is always kept), got {keep}");
        if (MetricsEvery < 1) throw new Phi2Exception($"--metrics-every must be at least 1 (1: read every step's metrics), got {MetricsEvery}");
        if (SkipNonFiniteSteps < 0) throw new Phi2Exception($"--skip-nonfinite must not be negative (0: stop at the first non-finite loss or gradient), got {SkipNonFiniteSteps}");
    }
}
