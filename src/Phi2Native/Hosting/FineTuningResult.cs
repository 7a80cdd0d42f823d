using Phi2Native.FineTuning.Training;

namespace Phi2Native.Hosting;

/// <summary>How a <see cref="FineTuningRun"/> ended and what it left on disk.</summary>
/// <param name="Stop">Why it ended: completed, cancelled (after a checkpoint), or a loss or gradient that was not finite.</param>
/// <param name="Steps">Optimizer steps done in the whole run, skipped ones included (for <see cref="TrainingStop.NonFinite"/>, the last good one).</param>
/// <param name="TotalSteps">Steps the run was to take.</param>
/// <param name="LastCheckpoint">The newest checkpoint of the run's history on disk (to resume from), if there is one.</param>
/// <param name="AdapterDirectory">
/// Where the adapter (and added tokens) was written, the output folder's top; null when none was (a non-finite stop
/// whose last state was not finite either keeps the adapter that was there).
/// </param>
/// <param name="NonFinite">For <see cref="TrainingStop.NonFinite"/>: the step and what was not finite.</param>
/// <param name="SkippedSteps">Steps skipped for a non-finite value in the whole run.</param>
public sealed record FineTuningResult(TrainingStop Stop, int Steps, int TotalSteps, string? LastCheckpoint, string? AdapterDirectory,
    NonFiniteValue? NonFinite, int SkippedSteps);
