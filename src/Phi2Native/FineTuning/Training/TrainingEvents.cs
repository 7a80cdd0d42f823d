namespace Phi2Native.FineTuning.Training;

/// <summary>One optimizer step's numbers.</summary>
/// <param name="Step">Optimizer steps done, 1-based.</param>
/// <param name="TotalSteps">Steps the run will take.</param>
/// <param name="Epoch">The epoch the step's data came from, 0-based.</param>
/// <param name="Loss">Mean training loss over the step's micro-batches.</param>
/// <param name="LearningRate">The rate the step used.</param>
/// <param name="GradientNorm">Global gradient norm before clipping.</param>
/// <param name="Tokens">Input tokens processed by the step.</param>
/// <param name="Seconds">Seconds spent in training steps since the run (or resume) started; validation and checkpoints not counted.</param>
public sealed record StepMetrics(int Step, int TotalSteps, int Epoch, double Loss, double LearningRate, double GradientNorm, long Tokens, double Seconds);

/// <summary>A validation pass.</summary>
/// <param name="Step">Optimizer steps done when it ran.</param>
/// <param name="Loss">Mean loss per scored token.</param>
/// <param name="Tokens">Scored tokens.</param>
public sealed record EvaluationMetrics(int Step, double Loss, long Tokens)
{
    /// <summary>exp(loss).</summary>
    public double Perplexity => Math.Exp(Loss);
}

/// <summary>Why a training run ended.</summary>
public enum TrainingStop
{
    /// <summary>Every step ran; a final checkpoint was written.</summary>
    Completed,

    /// <summary>Cancelled: the step in flight finished and a checkpoint was written.</summary>
    Cancelled,

    /// <summary>
    /// A loss or gradient was not finite and no skip was left (<see cref="TrainingOptions.SkipNonFiniteSteps"/>): that
    /// step updated nothing, and the state before it was written as a checkpoint unless it was on disk already or its
    /// parameters were not finite either.
    /// </summary>
    NonFinite,
}

/// <summary>How a run ended.</summary>
/// <param name="Steps">Optimizer steps done, skipped ones included (for <see cref="TrainingStop.NonFinite"/>, the last good step).</param>
/// <param name="Stop">Why it ended.</param>
/// <param name="LastCheckpoint">The last checkpoint folder this run wrote, if any.</param>
/// <param name="NonFinite">For <see cref="TrainingStop.NonFinite"/>, what was not finite.</param>
/// <param name="SkippedSteps">Steps skipped for a non-finite value in the whole run (a resumed run's earlier ones included).</param>
public sealed record TrainingResult(int Steps, TrainingStop Stop, string? LastCheckpoint, NonFiniteValue? NonFinite = null, int SkippedSteps = 0)
{
    /// <summary>True when cancelled (a checkpoint was written first).</summary>
    public bool Interrupted => Stop == TrainingStop.Cancelled;
}
