using System.CommandLine;
using System.Text.Json;
using Phi2Native.Embedded;
using Phi2Native.FineTuning;
using Phi2Native.FineTuning.Data;
using Phi2Native.FineTuning.Lora;
using Phi2Native.FineTuning.Selection;
using Phi2Native.FineTuning.Training;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;
using Phi2Native.Text;
using Spectre.Console;

namespace Phi2Native.Cli.Commands;

/// <summary>
/// `phi2 finetune`: LoRA (and full) fine-tuning on JSONL data. The output folder gets the adapter at its top,
/// checkpoints/step-N/, metrics.jsonl and loss.png; Ctrl-C writes a checkpoint before exiting, and --resume continues it.
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
        var stages = new StageProgress(error);
        // Declared before the model, so the model's device memory is freed before the backend goes.
        using var backend = BackendChoice.Open(args.Device, notices, training: true);
        var (model, modelDirectory) = ModelSource.Load(args.ModelDirectory, backend, stages, error, notices);
        using var modelScope = model;
        var tokenizer = TextTokenizer.FromModelFolder(modelDirectory, warning => error.WriteLine($"warning: {warning}"));
        if (tokenizer.VocabularySize > model.Config.VocabSize)
            throw new Phi2Exception($"the tokenizer ({tokenizer.Source}) has ids up to {tokenizer.VocabularySize - 1}, beyond the model's vocab_size {model.Config.VocabSize}: they do not belong together");
        if (args.Resume is not null) NewTokens.Apply(tokenizer, args.Resume);
        else if (args.NewTokens.Length > 0)
            foreach (var (token, id) in NewTokens.Add(tokenizer, model.Config, args.NewTokens)) error.WriteLine($"new token \"{token}\" -> id {id}");
        int? endOfText = tokenizer.EndOfTextId is { } eot && eot < model.Config.VocabSize ? eot : null;
        var jsonl = new JsonlOptions { EndOfTextId = endOfText, SkipMalformedLines = args.SkipBadLines, Warn = warning => error.WriteLine($"warning: {warning}") };
        var (dataPath, validationPath) = DataFiles(args, error);
        var training = JsonlDataset.Load(dataPath, tokenizer.Encode, jsonl);
        var validation = validationPath is null ? null : JsonlDataset.Load(validationPath, tokenizer.Encode, jsonl);
        var batching = new BatchingOptions
        {
            BatchSize = args.BatchSize, MaxLength = Math.Min(args.MaxLength, model.Config.MaxPositionEmbeddings), Mode = args.Batching,
            PadId = endOfText ?? 0, Seed = (ulong)args.Training.Seed,
        };
        var loader = BatchLoader.Create(training, batching);
        var validationRows = validation is null ? null : TrainingRows.Create(validation, batching.MaxLength, args.Batching, batching.PadId);
        error.WriteLine($"data: {loader.Rows.Summary}; {loader.BatchesPerEpoch} batches of {args.BatchSize} x {batching.MaxLength} per epoch");

        using var lora = args.Resume is null
            ? LoraModel.Create(model, WithNewTokenRows(args.Selection(model.Config), tokenizer, error), seed: args.Training.Seed)
            : PeftAdapter.Load(model, args.Resume, warning => error.WriteLine($"warning: {warning}"));
        Directory.CreateDirectory(args.Out);
        using var trainer = new Trainer(lora, loader, validationRows, args.Training, args.Out);
        if (args.Resume is not null)
        {
            TrainingCheckpoint.Restore(trainer, args.Resume);
            error.WriteLine($"resumed from {args.Resume} at step {trainer.Step} of {trainer.TotalSteps}");
        }
        long trainable = lora.TrainableParameters().Sum(p => p.ElementCount), total = model.Parameters().Sum(p => p.ElementCount);
        error.WriteLine($"training {trainable:N0} of {total:N0} parameters ({100.0 * trainable / total:F3}%), {trainer.TotalSteps} steps");

        var steps = new List<StepMetrics>();
        var evaluations = new List<EvaluationMetrics>();
        string metricsPath = Path.Combine(args.Out, "metrics.jsonl");
        using var metrics = new StreamWriter(metricsPath, append: args.Resume is not null);
        trainer.StepCompleted += m =>
        {
            steps.Add(m);
            metrics.WriteLine(JsonSerializer.Serialize(new { m.Step, m.Epoch, m.Loss, learning_rate = m.LearningRate, gradient_norm = m.GradientNorm, m.Tokens, m.Seconds }));
            metrics.Flush();
        };
        trainer.Evaluated += m =>
        {
            evaluations.Add(m);
            metrics.WriteLine(JsonSerializer.Serialize(new { m.Step, validation_loss = m.Loss, validation_perplexity = m.Perplexity, validation_tokens = m.Tokens }));
            metrics.Flush();
            error.WriteLine($"step {m.Step}: validation loss {m.Loss:F4}, perplexity {m.Perplexity:F2}");
        };
        trainer.CheckpointSaved += directory =>
        {
            NewTokens.Save(tokenizer, directory);
            error.WriteLine($"checkpoint {directory}");
        };

        using var cancellation = new CancellationTokenSource();
        ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; cancellation.Cancel(); error.WriteLine("interrupted: saving a checkpoint..."); };
        Console.CancelKeyPress += onCancel;
        TrainingResult result;
        try
        {
            result = TrainingProgress.Run(trainer, stages, error, cancellation.Token);
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
        PeftAdapter.Save(lora, args.Out, ModelSource.BaseName(args.ModelDirectory));
        NewTokens.Save(tokenizer, args.Out);
        LossPlot.Save(Path.Combine(args.Out, "loss.png"), steps, evaluations, $"phi2 finetune: {(args.ModelDirectory is null ? "embedded tiny model" : Path.GetFileName(Path.GetFullPath(args.ModelDirectory)))}");
        output.WriteLine(result.Interrupted
            ? $"interrupted at step {result.Steps}; resume with --resume {result.LastCheckpoint}"
            : $"done: {result.Steps} steps; adapter, metrics.jsonl and loss.png in {args.Out}");
        return result.Interrupted ? 130 : 0;
    }

    // Without --data, the embedded model trains on its own text (written beside the run), validated on the held-out part.
    private static (string Data, string? Validation) DataFiles(FinetuneOptions.Values args, TextWriter error)
    {
        if (args.Data is not null) return (args.Data, args.Validation);
        if (args.ModelDirectory is not null) throw new Phi2Exception("--data is required with --model: give a JSONL file of {\"text\": ...} or {\"prompt\": ..., \"completion\": ...} lines");
        Directory.CreateDirectory(args.Out);
        string data = EmbeddedDefault.WriteTrainingJsonl(Path.Combine(args.Out, "embedded-train.jsonl"));
        string validation = args.Validation ?? EmbeddedDefault.WriteValidationJsonl(Path.Combine(args.Out, "embedded-validation.jsonl"));
        error.WriteLine($"no --data: training on the embedded text ({EmbeddedDefault.TextSource.Split(';')[0]}), validating on its held-out chapters");
        return (data, validation);
    }

    // New tokens' rows must learn: their embedding and their lm_head row train through LoRA unless they already train.
    private static LoraConfig WithNewTokenRows(LoraConfig config, TextTokenizer tokenizer, TextWriter error)
    {
        if (tokenizer.AddedTokens.Count == 0) return config;
        var targets = config.TargetModules.ToList();
        foreach (var module in new[] { "model.embed_tokens", "lm_head" })
            if (!targets.Contains(module) && !ModuleSelection.IsModuleToSave(config, module))
            {
                targets.Add(module);
                error.WriteLine($"note: {module} trains with LoRA so the new tokens' rows learn");
            }
        return config with { TargetModules = targets };
    }
}
