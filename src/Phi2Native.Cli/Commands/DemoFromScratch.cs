using Phi2Native.Embedded;
using Phi2Native.FineTuning.Training;
using Phi2Native.Text;
using Spectre.Console;

namespace Phi2Native.Cli.Commands;

/// <summary>
/// `phi2 demo --from-scratch`, the demo before the pretrained base shipped: the embedded tiny model trains every
/// parameter from random weights on the shipped text with a progress bar (its validation loss falls below half its
/// start in well under a minute on 2 cores), then continues a prompt taken from that text.
/// </summary>
internal static class DemoFromScratch
{
    /// <summary>Greedy tokens continued after training, when --max-tokens is not given.</summary>
    public const int DefaultMaxTokens = 48;

    public static int Run(int steps, string prompt, int maxTokens, DeviceRequest device, TextWriter output, TextWriter error, TextWriter notices)
    {
        if (steps <= 0) throw new Phi2Exception($"--steps must be positive, got {steps}");
        // Refused now rather than after a minute of training: the demo continues text, and "" has none.
        if (prompt.Length == 0) throw new Phi2Exception("--prompt is empty: the demo continues a text; give some");
        if (maxTokens < 0) throw new Phi2Exception($"--max-tokens must not be negative, got {maxTokens}");
        var console = CliConsole.Create(output);
        console.Write(new Rule("[bold]Phi2Native demo[/]: training from scratch"));
        console.MarkupLine("[yellow]" + Markup.Escape(EmbeddedDefault.Description) + "[/]");

        var settings = EmbeddedDefault.RecommendedTraining with
        {
            Steps = steps, WarmupSteps = Math.Min(EmbeddedDefault.RecommendedTraining.WarmupSteps, steps / 4),
        };
        var tokenizer = EmbeddedDefault.Tokenizer();
        var (training, validation) = EmbeddedDefault.PackedRows(tokenizer, settings.MaxLength);

        // Declared before the model, so the model's device memory is freed before the backend goes.
        using var backend = BackendChoice.Open(device, notices, training: true);
        using var model = EmbeddedDefault.CreateRandomModel(backend.Backend);
        using var run = new EmbeddedTraining(model, training, validation, settings, evaluateEvery: Math.Max(1, steps / 6));
        console.MarkupLine($"training every parameter of the untrained model (random weights, seed {EmbeddedDefault.DefaultSeed}) for {steps} steps: " +
                           $"B={settings.BatchSize} T={settings.MaxLength}, AdamW lr {settings.LearningRate}, " +
                           $"{training.Count} rows of the text, validation on {validation.TargetCount:N0} held-out tokens");
        var evaluations = new List<EvaluationMetrics>();
        double seconds = 0;
        run.Train(trainer =>
        {
            trainer.Evaluated += e =>
            {
                evaluations.Add(e);
                error.WriteLine($"step {e.Step}: validation loss {e.Loss:F4}");
            };
            trainer.StepCompleted += m => seconds = m.Seconds;
        }, trainer => TrainingProgress.Run(trainer, new StageProgress(error), error, CancellationToken.None));
        double start = evaluations[0].Loss, end = evaluations[^1].Loss;
        console.MarkupLine($"validation loss [bold]{start:F3} -> {end:F3}[/] ({end / start:P0} of the start) after {seconds:F1} s of training");

        DemoCommand.WriteRealPhi2Hint(console);
        console.Write(new Rule("[bold]generating[/] (greedy, KV cache)"));
        var decoder = new IncrementalDecoder(tokenizer);
        console.Markup($"[bold]{Markup.Escape(prompt)}[/]");
        var generator = new Generator(model, tokenizer);
        generator.Generate(prompt, new GenerationOptions { MaxNewTokens = maxTokens }, token => console.Write(decoder.Append(token)));
        console.WriteLine(decoder.Flush());
        return 0;
    }
}
