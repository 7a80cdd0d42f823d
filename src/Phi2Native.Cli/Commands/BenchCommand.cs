using System.CommandLine;
using System.Globalization;
using Phi2Native.Benchmarking;
using Phi2Native.Hosting;
using Spectre.Console;

namespace Phi2Native.Cli.Commands;

/// <summary>
/// `phi2 bench train|lora|decode|prefill`: the command a benchmark harness runs. Each workload named is one case
/// (<see cref="Benchmark"/> in the library builds, warms up and times it); the results print as a table, or with
/// --json as one JSON object per case, one per line, on standard output. Progress and notices go to standard error.
/// </summary>
internal static class BenchCommand
{
    public static Command Create(TextWriter output, TextWriter error)
    {
        var workloads = new Argument<string[]>("workload")
        {
            Description = $"What to time, one case each: {BenchmarkWorkloads.Spellings} (train: a full training step with AdamW; lora: a LoRA step " +
                          "of --preset; decode: one token per row after a prefill of --seq; prefill: --seq tokens per row into an empty KV cache).",
            Arity = ArgumentArity.OneOrMore,
        };
        var model = new Option<string?>("--model") { Description = "A model folder whose weights are timed (default: random weights of --config)." };
        var config = new Option<string?>("--config") { Description = $"Random weights of a named config: {BenchmarkOptions.ConfigSpellings} (default embedded; phi2 is microsoft/phi-2's)." };
        var layers = new Option<int?>("--layers") { Description = "Decoder layers of the --config model (default: the config's; Phi-2's widths at 2 layers fit a small machine)." };
        var batch = new Option<int>("--batch") { Description = "B: rows per step.", DefaultValueFactory = _ => 1 };
        var sequence = new Option<int>("--seq") { Description = "T: tokens per row (decode: the prefill before the timed tokens).", DefaultValueFactory = _ => 128 };
        var preset = new Option<string?>("--preset") { Description = $"The LoRA task preset of lora (default {BenchmarkOptions.DefaultPreset}: q, k, v, dense, fc1, fc2; r 16)." };
        var repeat = new Option<int>("--repeat") { Description = "Measured repetitions; the median is the headline.", DefaultValueFactory = _ => 5 };
        var warmup = new Option<int>("--warmup") { Description = "Untimed repetitions first.", DefaultValueFactory = _ => 1 };
        var json = new Option<bool>("--json") { Description = "One JSON object per case on standard output, one per line (the fields are README.md's)." };
        var device = new DeviceOptions(DeviceOptions.InferenceDTypeDescription);
        var command = new Command("bench", "Time training steps, LoRA steps, decoding or prefill: median and spread of repetitions, tokens/s, peak memory; --json for harnesses.")
        {
            workloads, model, config, layers, batch, sequence, preset, repeat, warmup, json,
        };
        foreach (var option in device.All) command.Options.Add(option);
        command.SetAction(result => CommandErrors.Guard(error, () =>
        {
            var request = device.Read(result);
            var cases = (result.GetValue(workloads) ?? []).Select(name => new BenchmarkOptions
            {
                Workload = BenchmarkWorkloads.Parse(name), Device = request.Device, DType = request.DType,
                ModelDirectory = result.GetValue(model), Config = result.GetValue(config), Layers = result.GetValue(layers),
                Batch = result.GetValue(batch), Sequence = result.GetValue(sequence), Preset = result.GetValue(preset),
                Repeat = result.GetValue(repeat), Warmup = result.GetValue(warmup),
            }).ToList();
            return Run(cases, result.GetValue(json), output, error, Notices.Writer(result, error));
        }));
        return command;
    }

    private static int Run(IReadOnlyList<BenchmarkOptions> cases, bool json, TextWriter output, TextWriter error, TextWriter notices)
    {
        // Every case's options are checked before any model is built.
        foreach (var options in cases) options.ResolveConfig();
        bool training = cases.Any(c => c.Workload is BenchmarkWorkload.Train or BenchmarkWorkload.Lora);
        using var backend = BackendChoice.Open(new DeviceRequest(cases[0].Device, cases[0].DType), notices, training);
        if (cases[0].ModelDirectory is null) notices.WriteLine($"model: random weights of the {cases[0].ModelName()} config");
        var progress = new StageProgress(error);
        var results = new List<BenchmarkResult>();
        foreach (var options in cases)
        {
            string stage = $"bench {options.Workload.Name()}: {options.Warmup} warm-up + {options.Repeat} measured";
            var benchmark = progress.Run(stage, fraction => Benchmark.Run(options, backend.Compute, fraction, warning => error.WriteLine($"warning: {warning}")));
            results.Add(benchmark);
            if (json)
            {
                output.WriteLine(benchmark.ToJson());
                output.Flush();
            }
        }
        if (!json) Render(results, output);
        return ExitCodes.Done;
    }

    private static void Render(IReadOnlyList<BenchmarkResult> results, TextWriter output)
    {
        var console = CliConsole.Create(output);
        var first = results[0];
        console.MarkupLine(Markup.Escape($"{first.DeviceDescription}; model {first.Model}: {first.Layers} layers, C {first.HiddenSize}, {first.Parameters:N0} parameters"));
        var table = new Table().AddColumns("case", "B x T", "trainable", "median ms", "spread (MAD) ms", "min-max ms", "tokens/s", "peak memory", "resident");
        foreach (int column in new[] { 2, 3, 4, 6, 7, 8 }) table.Columns[column].RightAligned();
        foreach (var r in results)
        {
            string name = r.Preset is { } preset ? $"{r.Workload.Name()} ({preset}, r {r.LoraRank})" : r.Workload.Name();
            table.AddRow(Markup.Escape(name), $"{r.Batch} x {r.Sequence}", r.TrainableParameters.ToString("N0", CultureInfo.InvariantCulture),
                Ms(r.Times.MedianMs), Ms(r.Times.MedianAbsoluteDeviationMs), $"{Ms(r.Times.MinMs)}-{Ms(r.Times.MaxMs)}",
                r.TokensPerSecond.ToString(r.TokensPerSecond >= 100 ? "F0" : "F1", CultureInfo.InvariantCulture), LayersCommand.Size(r.PeakBytes), LayersCommand.Size(r.ResidentBytes));
        }
        console.Write(table);
        console.MarkupLine(Markup.Escape($"median of {first.Times.Milliseconds.Count} after {first.Warmup} warm-up; decode's T is the prefill before the timed token; " +
                                         "memory: bytes held by tensors (peak during the measured repetitions)"));
    }

    private static string Ms(double ms) => ms.ToString(ms < 10 ? "F3" : "F1", CultureInfo.InvariantCulture);
}
