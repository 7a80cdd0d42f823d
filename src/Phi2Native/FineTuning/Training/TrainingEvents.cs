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

/// <summary>How a run ended.</summary>
/// <param name="Steps">Optimizer steps done.</param>
/// <param name="Interrupted">True when cancelled (a checkpoint was written first).</param>
/// <param name="LastCheckpoint">The last checkpoint folder written, if any.</param>
public sealed record TrainingResult(int Steps, bool Interrupted, string? LastCheckpoint);
