using Phi2Native.FineTuning.Training;
using Phi2Native.Hosting;
using Spectre.Console;

namespace Phi2Native.Cli.Commands;

/// <summary>A training run shown as it goes, fed by its events: a live bar (loss, tokens/s, ETA) on a terminal, a line per tenth of the run otherwise.</summary>
internal static class TrainingProgress
{
    /// <summary>Runs <paramref name="run"/> to its end with progress on <paramref name="stages"/>' console (or <paramref name="error"/>), and skipped steps as warnings.</summary>
    public static FineTuningResult Run(FineTuningRun run, StageProgress stages, TextWriter error, CancellationToken cancellation)
    {
        run.StepSkipped += s => error.WriteLine($"warning: step {s.Value.Step} skipped: {s.Value.What}; it updated nothing ({s.Skipped} of at most {s.Allowed} skipped, --skip-nonfinite)");
        return Show(subscribe => run.StepCompleted += subscribe, run.StartStep, run.TotalSteps, stages, error, () => run.Train(cancellation));
    }

    /// <summary>Runs <paramref name="trainer"/> as <see cref="Trainer.Run"/> does, with the same progress.</summary>
    public static TrainingResult Run(Trainer trainer, StageProgress stages, TextWriter error, CancellationToken cancellation) =>
        Show(subscribe => trainer.StepCompleted += subscribe, trainer.Step, trainer.TotalSteps, stages, error, () => trainer.Run(cancellation));

    private static T Show<T>(Action<Action<StepMetrics>> subscribe, int startStep, int totalSteps, StageProgress stages, TextWriter error, Func<T> train)
    {
        // A live bar (loss, tokens/s, ETA) on a terminal; one line per tenth of the run otherwise.
        if (!stages.Interactive)
        {
            int every = Math.Max(1, totalSteps / 10), stepsHere = 0;
            subscribe(m =>
            {
                stepsHere++;
                if (m.Step % every == 0 || m.Step == m.TotalSteps)
                    error.WriteLine($"step {m.Step}/{m.TotalSteps}: loss {m.Loss:F4}, lr {m.LearningRate:G3}, {m.Tokens / Math.Max(m.Seconds / stepsHere, 1e-9):F0} tokens/s");
            });
            return train();
        }
        T result = default!;
        stages.Console.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .Start(context =>
            {
                var task = context.AddTask("training", maxValue: totalSteps);
                task.Value = startStep;
                long tokens = 0;
                subscribe(m =>
                {
                    tokens += m.Tokens;
                    task.Value = m.Step;
                    task.Description = $"loss {m.Loss:F4}  {tokens / Math.Max(m.Seconds, 1e-9):F0} tok/s";
                });
                result = train();
            });
        return result;
    }
}
