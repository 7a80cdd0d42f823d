using System.CommandLine;
using Phi2Native.Embedded;
using Phi2Native.FineTuning.Training;
using Spectre.Console;

namespace Phi2Native.Cli.Commands;

/// <summary>
/// `phi2 demo`, the README's main job on a fresh machine: the mission on the embedded tiny model. LoRA adapters of a
/// task preset go on the layers the user picks of the pretrained base (Genesis only), the rest frozen, and train on
/// Exodus, a text the base has never seen; the demo shows the trainable parameters against the frozen ones, the backward
/// ops skipped below the lowest trained layer, the held-out loss on Exodus and on Genesis before and after, and a seeded
/// sampled continuation from the base and from base + adapter side by side. <c>--from-scratch</c> trains the whole model
/// from random weights instead (<see cref="DemoFromScratch"/>); <c>--make-base PATH</c> makes the base (<see cref="DemoMakeBase"/>).
/// </summary>
internal static class DemoCommand
{
    public static Command Create(TextWriter output, TextWriter error)
    {
        var defaults = new LoraDemoSettings();
        var preset = new Option<string?>("--preset") { Description = $"The task preset whose modules get LoRA adapters (default {defaults.Preset}); one without embed_tokens." };
        var layers = new Option<string?>("--layers") { Description = $"The layers that get adapters, e.g. 2-3, 3 or 1,3 (default {defaults.Layers}); the others stay frozen." };
        var steps = new Option<int?>("--steps")
        {
            Description = $"Optimizer steps (default {defaults.Training.Steps}; with --from-scratch {EmbeddedDefault.RecommendedTraining.Steps}).",
        };
        var prompt = new Option<string>("--prompt") { Description = "The text to continue.", DefaultValueFactory = _ => defaults.Prompt };
        var maxTokens = new Option<int?>("--max-tokens")
        {
            Description = $"Tokens to generate (default {defaults.MaxNewTokens}; with --from-scratch {DemoFromScratch.DefaultMaxTokens}).",
        };
        var seed = new Option<ulong?>("--seed") { Description = $"Seed of the sampled continuations (default {defaults.Sampling.Seed}); both models draw with it." };
        var fromScratch = new Option<bool>("--from-scratch") { Description = "Train every parameter of the untrained model (random weights) on the whole text instead, then generate greedily." };
        var makeBase = new Option<string?>("--make-base")
        {
            Description = "Make the pretrained base instead: train the embedded model on Genesis by the shipped recipe (CPU, a few minutes) and write its " +
                          "weights to this file, then say whether they are the shipped base byte for byte.",
        };
        var device = new DeviceOptions(dtypeDescription: null);
        var command = new Command("demo", "Fine-tune LoRA adapters on chosen layers of the pretrained embedded model, the rest frozen, and compare base and base + adapter.")
        {
            preset, layers, steps, prompt, maxTokens, seed, fromScratch, makeBase,
        };
        foreach (var option in device.All) command.Options.Add(option);
        command.SetAction(result => CommandErrors.Guard(error, () =>
        {
            var notices = Notices.Writer(result, error);
            string? basePath = result.GetValue(makeBase);
            bool scratch = result.GetValue(fromScratch);
            var deviceRequest = device.Read(result);
            // Each mode refuses the options it would ignore, so nothing given is silently dropped.
            var loraOnly = new (string Name, bool Given)[]
            {
                ("--preset", result.GetValue(preset) is not null), ("--layers", result.GetValue(layers) is not null), ("--seed", result.GetValue(seed) is not null),
            };
            if (basePath is not null)
            {
                Refuse("--make-base", [.. loraOnly, ("--from-scratch", scratch), ("--steps", result.GetValue(steps) is not null),
                    ("--max-tokens", result.GetValue(maxTokens) is not null), ("--device", deviceRequest.Device.Kind != Tensors.DeviceKind.Cpu)]);
                return DemoMakeBase.Run(basePath, output, error, notices);
            }
            if (scratch)
            {
                Refuse("--from-scratch", loraOnly);
                return DemoFromScratch.Run(result.GetValue(steps) ?? EmbeddedDefault.RecommendedTraining.Steps, result.GetValue(prompt)!,
                    result.GetValue(maxTokens) ?? DemoFromScratch.DefaultMaxTokens, deviceRequest, output, error, notices);
            }
            var settings = defaults with
            {
                Preset = result.GetValue(preset) ?? defaults.Preset,
                Layers = result.GetValue(layers) ?? defaults.Layers,
                Training = defaults.Training with { Steps = result.GetValue(steps) ?? defaults.Training.Steps },
                Prompt = result.GetValue(prompt)!,
                MaxNewTokens = result.GetValue(maxTokens) ?? defaults.MaxNewTokens,
                Sampling = defaults.Sampling with { Seed = result.GetValue(seed) ?? defaults.Sampling.Seed },
            };
            return RunLora(settings, deviceRequest, output, error, notices);
        }));
        return command;
    }

    private static void Refuse(string mode, IEnumerable<(string Name, bool Given)> options)
    {
        string[] given = options.Where(o => o.Given).Select(o => o.Name).ToArray();
        if (given.Length > 0) throw new Phi2Exception($"{string.Join(", ", given)} {(given.Length == 1 ? "does" : "do")} not apply to demo {mode}");
    }

    private static int RunLora(LoraDemoSettings settings, DeviceRequest device, TextWriter output, TextWriter error, TextWriter notices)
    {
        // Checked before any device opens or weight loads: an unknown preset or layer is one message.
        var plan = EmbeddedLoraDemo.Plan(settings);
        var console = CliConsole.Create(output);
        string layerText = LayerText(plan.Layers);
        console.Write(new Rule($"[bold]Phi2Native demo[/]: LoRA on layers {layerText} of a pretrained base, the rest frozen"));
        console.MarkupLine("[yellow]" + Markup.Escape(EmbeddedDefault.Description) + "[/]");
        console.MarkupLine($"[bold]base[/]: the embedded model pretrained on Genesis only (src/Phi2Native/Embedded/base.safetensors, SHA-256 {EmbeddedBase.ShippedSha256[..16]}...; " +
                           "phi2 demo --make-base remakes it)");
        console.MarkupLine($"[bold]task[/]: preset [bold]{plan.Preset.Name}[/] ({Markup.Escape(plan.Preset.Goal)}): LoRA r={plan.Selection.R} alpha={plan.Selection.Alpha} " +
                           $"on {string.Join(", ", plan.Preset.Modules)} of layers {layerText}, fine-tuned on Exodus ({EmbeddedBook.Exodus.TrainingParagraphs.Count} chapters), " +
                           "a book the base has never seen");

        using var backend = BackendChoice.Open(device, notices, training: true);
        var training = settings.Training;
        var result = EmbeddedLoraDemo.Run(backend.Backend, settings, trainer =>
            trainer.Evaluated += e => error.WriteLine($"step {e.Step}: Exodus held-out loss {e.Loss:F4}"),
            trainer => TrainingProgress.Run(trainer, new StageProgress(error), error, CancellationToken.None));

        var work = new Table().Title("[bold]what trains[/]").AddColumns("", "count", "");
        work.Columns[1].RightAligned();
        work.AddRow("trainable: LoRA A and B", $"[green]{result.TrainableParameters:N0}[/]",
            $"{100.0 * result.TrainableParameters / result.FrozenParameters:F2} % of the base");
        work.AddRow("frozen: every base parameter", $"{result.FrozenParameters:N0}", "no gradient, no optimizer state");
        work.AddRow("backward ops per step", $"{result.Backward.OpsRun}", $"{result.Backward.OpsRunTrainingEverything} with every parameter trainable");
        work.AddRow($"skipped below layer {result.LowestTrainedLayer}", $"[green]{result.Backward.OpsBelowLowestTrainedLayer}[/]",
            result.LowestTrainedLayer == 0 ? "the embedding only" : $"the embedding and layers {LayerText(Enumerable.Range(0, result.LowestTrainedLayer).ToList())}: forward only");
        console.Write(work);

        var losses = new Table().Title($"[bold]held-out loss[/] (per token; {result.Steps} steps of B={training.BatchSize} T={training.MaxLength}, " +
                                       $"{result.TrainingSeconds:F1} s of training)").AddColumns("text", "base", "base + adapter", "change");
        foreach (var column in losses.Columns.Skip(1)) column.RightAligned();
        losses.AddRow($"Exodus, chapters 10 and 30 ({result.ExodusValidationTokens:N0} tokens)", $"{result.ExodusLossBefore:F3}", $"{result.ExodusLossAfter:F3}",
            Change(result.ExodusChange));
        losses.AddRow($"Genesis, chapters 20 and 40 ({result.GenesisValidationTokens:N0} tokens)", $"{result.GenesisLossBefore:F3}", $"{result.GenesisLossAfter:F3}",
            Change(result.GenesisChange));
        console.Write(losses);

        var sampling = settings.Sampling;
        var continuations = new Table().Title($"[bold]continuations[/] (sampled: temperature {sampling.Temperature}, top-k {sampling.TopK}, seed {sampling.Seed})")
            .AddColumns("base", "base + adapter");
        string prompt = $"[bold]{Markup.Escape(settings.Prompt)}[/]";
        continuations.AddRow(prompt + Markup.Escape(result.BaseContinuation), prompt + Markup.Escape(result.AdaptedContinuation));
        console.Write(continuations);
        WriteRealPhi2Hint(console);
        return 0;
    }

    /// <summary>The same commands on the real Phi-2: for the end of every demo.</summary>
    internal static void WriteRealPhi2Hint(IAnsiConsole console)
    {
        console.MarkupLine("This is the tiny stand-in, not Phi-2. With the real Phi-2 (a folder holding its config.json, safetensors, vocab.json, merges.txt):");
        console.MarkupLine("  [grey]phi2 generate --model /path/to/phi-2 --prompt \"def fibonacci(n):\"[/]");
        console.MarkupLine("  [grey]phi2 finetune --model /path/to/phi-2 --data train.jsonl --preset domain --layers 24-31 --out run/[/]");
    }

    private static string Change(double relative) =>
        relative <= 0 ? $"[green]{100 * relative:+0.0;-0.0} %[/]" : $"[red]{100 * relative:+0.0;-0.0} %[/]";

    /// <summary>"2-3" for a run of layers, "1, 3" otherwise.</summary>
    private static string LayerText(IReadOnlyList<int> layers) =>
        layers.Count > 1 && layers[^1] - layers[0] == layers.Count - 1 ? $"{layers[0]}-{layers[^1]}" : string.Join(", ", layers);
}
