using Phi2Native.FineTuning;
using Phi2Native.FineTuning.Training;
using Spectre.Console;

namespace Phi2Native.Cli.Commands;

/// <summary>A training run shown as it goes: a live bar (loss, tokens/s, ETA) on a terminal, a line per tenth of the run otherwise.</summary>
internal static class TrainingProgress
{
    public static TrainingResult Run(Trainer trainer, StageProgress stages, TextWriter error, CancellationToken cancellation)
    {
        // A live bar (loss, tokens/s, ETA) on a terminal; one line per tenth of the run otherwise.
        if (!stages.Interactive)
        {
            int every = Math.Max(1, trainer.TotalSteps / 10);
            trainer.StepCompleted += m =>
            {
                if (m.Step % every == 0 || m.Step == m.TotalSteps)
                    error.WriteLine($"step {m.Step}/{m.TotalSteps}: loss {m.Loss:F4}, lr {m.LearningRate:G3}, {m.Tokens / Math.Max(m.Seconds / m.Step, 1e-9):F0} tokens/s");
            };
            return trainer.Run(cancellation);
        }
        TrainingResult result = null!;
        stages.Console.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .Start(context =>
            {
                var task = context.AddTask("training", maxValue: trainer.TotalSteps);
                task.Value = trainer.Step;
                long tokens = 0;
                trainer.StepCompleted += m =>
                {
                    tokens += m.Tokens;
                    task.Value = m.Step;
                    task.Description = $"loss {m.Loss:F4}  {tokens / Math.Max(m.Seconds, 1e-9):F0} tok/s";
                };
                result = trainer.Run(cancellation);
            });
        return result;
    }
}
