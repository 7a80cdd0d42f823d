using System.Globalization;
using Phi2Native.Backends.Cpu;
using Phi2Native.Embedded;

namespace Phi2Native.Bench;

/// <summary>
/// <c>phi2 demo</c>'s run (<see cref="EmbeddedLoraDemo"/>) without the console: LoRA of a task preset on a layer range
/// of the pretrained base, fine-tuned on Exodus. Prints every figure the demo shows (trainable against frozen
/// parameters, backward ops, held-out losses before and after, both continuations) and the Exodus curve, for
/// bench/RESULTS.md. The options override the demo's settings, for choosing them; <c>--base PATH</c> takes a base
/// not yet shipped (a file <c>embedded-base --out</c> made).
/// </summary>
internal static class EmbeddedDemoBench
{
    public static int Run(ArgReader args)
    {
        var defaults = new LoraDemoSettings();
        var training = defaults.Training with
        {
            Steps = args.Int("steps", defaults.Training.Steps),
            LearningRate = args.Double("lr", defaults.Training.LearningRate),
            BatchSize = args.Int("batch", defaults.Training.BatchSize),
            WarmupSteps = args.Int("warmup", defaults.Training.WarmupSteps, min: 0),
        };
        var settings = defaults with
        {
            Preset = args.String("preset", defaults.Preset),
            Layers = args.String("layers", defaults.Layers),
            Rank = args.Int("r", defaults.Rank),
            Alpha = args.Double("alpha", defaults.Alpha),
            Validations = args.Int("validations", defaults.Validations),
            Training = training,
        };
        string basePath = args.String("base", "");
        bool markdown = args.Flag("markdown");
        args.RejectUnknown();

        Console.WriteLine($"{DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, .NET {Environment.Version}, CPU backend, fp32, {Environment.ProcessorCount} threads");
        Console.WriteLine($"preset {settings.Preset}, layers {settings.Layers}, r {settings.Rank}, alpha {settings.Alpha}; B={training.BatchSize} T={training.MaxLength} " +
                          $"lr {training.LearningRate} warmup {training.WarmupSteps} steps {training.Steps} weight decay {training.WeightDecay}; " +
                          $"base {(basePath.Length > 0 ? basePath : "the shipped one")}");
        var result = EmbeddedLoraDemo.Run(
            () => basePath.Length > 0 ? EmbeddedDefault.CreateModel(CpuBackend.Default, basePath) : EmbeddedDefault.CreateModel(CpuBackend.Default),
            settings, trainer => trainer.Evaluated += e => Console.WriteLine($"step {e.Step}: Exodus held-out loss {e.Loss:F4}"));

        var backward = result.Backward;
        Console.WriteLine();
        var table = new Table("figure", "value");
        table.Add("modules with adapters", $"{string.Join(",", result.Preset.Modules)} on layers {string.Join(",", result.Layers)}");
        table.Add("trainable / frozen parameters", $"{result.TrainableParameters:N0} / {result.FrozenParameters:N0} ({100.0 * result.TrainableParameters / result.FrozenParameters:F2} %)");
        table.Add("backward ops run / with everything trainable", $"{backward.OpsRun} / {backward.OpsRunTrainingEverything}");
        table.Add($"backward ops skipped below layer {result.LowestTrainedLayer}", $"{backward.OpsBelowLowestTrainedLayer} (of {backward.OpsSkipped} skipped in all)");
        table.Add($"Exodus held-out loss ({result.ExodusValidationTokens:N0} tokens)", Change(result.ExodusLossBefore, result.ExodusLossAfter));
        table.Add($"Genesis held-out loss ({result.GenesisValidationTokens:N0} tokens)", Change(result.GenesisLossBefore, result.GenesisLossAfter));
        table.Add("training", $"{result.Steps} steps, {result.TrainingSeconds:F1} s in steps, {result.WallSeconds:F1} s with validation");
        table.Write(Console.Out, markdown);
        Console.WriteLine();
        Console.WriteLine($"base:           {settings.Prompt}{result.BaseContinuation.ReplaceLineEndings(" / ")}");
        Console.WriteLine($"base + adapter: {settings.Prompt}{result.AdaptedContinuation.ReplaceLineEndings(" / ")}");
        return 0;
    }

    private static string Change(double before, double after) =>
        string.Create(CultureInfo.InvariantCulture, $"{before:F4} -> {after:F4} ({100 * (after - before) / before:+0.0;-0.0} %)");
}
