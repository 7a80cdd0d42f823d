using System.CommandLine;
using Phi2Native.FineTuning.Training;
using Phi2Native.Hosting;

namespace Phi2Native.Cli.Commands;

/// <summary>
/// `phi2 finetune`: LoRA (and full) fine-tuning on JSONL data, run by the library's <see cref="FineTuningRun"/>; this
/// command parses, shows progress, draws loss.png and turns the outcome into an exit code (<see cref="ExitCodes"/>).
/// SIGINT and SIGTERM stop the run after its step and a checkpoint (130, 143); a loss or gradient that is not finite
/// stops it with 3.
/// </summary>
internal static class FinetuneCommand
{
    public static Command Create(TextWriter output, TextWriter error)
    {
        var o = new FinetuneOptions();
        var command = new Command("finetune", "Fine-tune with LoRA (PEFT-compatible adapters) on JSONL data ({\"text\"} or {\"prompt\",\"completion\"} lines).");
        foreach (var option in o.All) command.Options.Add(option);
        command.SetAction(result => CommandErrors.Guard(error, () => Run(o.Read(result), output, error, Notices.Writer(result, error))));
        return command;
    }

    public static int Run(FinetuneOptions.Values args, TextWriter output, TextWriter error, TextWriter notices)
    {
        using var signals = new SignalCancellation(error);
        var stages = new StageProgress(error);
        var options = args.Run with
        {
            Device = args.Device.Device, DType = args.Device.DType,
            Warn = warning => error.WriteLine($"warning: {warning}"),
            Notice = note => error.WriteLine($"note: {note}"),
        };
        // Refused before the device opens or the folder is made (the run checks again).
        options.Validate();
        // Declared before the run, so the run's model is freed before the backend goes.
        using var backend = BackendChoice.Open(args.Device, notices, training: true);
        Notices.Model(options.ModelDirectory, notices);
        FineTuningRun run;
        try
        {
            run = stages.Run($"loading {ModelSource.DisplayName(options.ModelDirectory)} and the data", progress =>
                FineTuningRun.Open(options with { Backend = backend.Backend, DType = backend.DType, LoadProgress = progress }, signals.Token));
        }
        catch (OperationCanceledException) when (signals.Signal is not null)
        {
            error.WriteLine($"stopped by {signals.SignalName} before training began; nothing was trained or written");
            return signals.ExitCode;
        }
        using (run)
        {
            foreach (var (token, id) in run.AddedTokens) error.WriteLine($"new token \"{token}\" -> id {id}");
            error.WriteLine($"data: {run.DataSummary}");
            if (options.ResumeFrom is not null) error.WriteLine($"resumed from {options.ResumeFrom} at step {run.StartStep} of {run.TotalSteps}");
            long trainable = run.TrainableParameters, total = run.TotalParameters;
            error.WriteLine($"training {trainable:N0} of {total:N0} parameters ({100.0 * trainable / total:F3}%), {run.TotalSteps} steps");
            run.Evaluated += m => error.WriteLine($"step {m.Step}: validation loss {m.Loss:F4}, perplexity {m.Perplexity:F2}");
            run.CheckpointSaved += directory => error.WriteLine($"checkpoint {directory}");

            var result = TrainingProgress.Run(run, stages, error, signals.Token);
            LossPlot.Save(Path.Combine(run.OutputDirectory, "loss.png"), run.StepHistory, run.EvaluationHistory,
                $"phi2 finetune: {(options.ModelDirectory is null ? "embedded tiny model" : ModelSource.DisplayName(options.ModelDirectory))}");
            return Report(result, run.OutputDirectory, signals, output, error);
        }
    }

    private static int Report(FineTuningResult result, string outDirectory, SignalCancellation signals, TextWriter output, TextWriter error)
    {
        string resume = result.LastCheckpoint is null ? "" : $"; resume with --resume {result.LastCheckpoint}";
        switch (result.Stop)
        {
            case TrainingStop.Completed:
                output.WriteLine($"done: {result.Steps} steps{(result.SkippedSteps > 0 ? $" ({result.SkippedSteps} skipped)" : "")}; adapter, metrics.jsonl and loss.png in {outDirectory}");
                return ExitCodes.Done;
            case TrainingStop.Cancelled:
                output.WriteLine($"stopped by {(signals.Signal is null ? "cancellation" : signals.SignalName)} at step {result.Steps} of {result.TotalSteps}, after writing a checkpoint{resume}");
                return signals.ExitCode;
            default:
                var value = result.NonFinite!;
                error.WriteLine($"error: training stopped at step {value.Step}: {value.What}. That step updated nothing; " +
                                (result.LastCheckpoint is null
                                    ? "no checkpoint of a good state is on disk (the parameters were not finite either: lower --lr or --weight-decay)."
                                    : $"the last good checkpoint is {result.LastCheckpoint}{(result.AdapterDirectory is null ? "" : $" and the adapter in {result.AdapterDirectory} is its")}. " +
                                      "Lower --lr, check the data and the base weights, or let a few such steps pass with --skip-nonfinite N."));
                output.WriteLine($"stopped at step {value.Step}: {value.What}{resume}");
                return ExitCodes.NonFinite;
        }
    }
}
