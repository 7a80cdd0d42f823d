using System.CommandLine;
using Phi2Native.Hosting;
using Phi2Native.Models.Phi2;
using Phi2Native.Profiling;
using Spectre.Console;

namespace Phi2Native.Cli.Commands;

/// <summary>
/// `phi2 profile`: one warm-up and one measured step of a workload, recorded at the device seam, printed as a table per
/// kernel or op sorted by modelled H100 time with the totals, or as JSON for harnesses, and optionally a Chrome trace.
/// </summary>
internal static class ProfileCommand
{
    public static Command Create(TextWriter output, TextWriter error)
    {
        var device = new DeviceOptions("Compute dtype: f32 (default) or bf16 (the CUDA backend only).");
        var model = new Option<string?>("--model") { Description = "Model folder (its config and weights); default: --config." };
        var config = new Option<string>("--config")
        {
            Description = "Without --model: embedded (the embedded model; default) or phi2 (Phi-2's widths, random weights).", DefaultValueFactory = _ => "embedded",
        };
        var layers = new Option<int?>("--layers") { Description = "Decoder layers of the --config, random weights (Phi-2's 32 in fp32 training do not fit a small machine: train at 2)." };
        var batch = new Option<int>("--batch") { Description = "B (default 1).", DefaultValueFactory = _ => 1 };
        var seq = new Option<int>("--seq") { Description = "T (default 64); for decode, the prefill's length before the measured token.", DefaultValueFactory = _ => 64 };
        var what = new Option<string>("--what") { Description = "train (every parameter), lora (the preset's modules, r 16), decode (one token after T) or prefill.", Required = true };
        var preset = new Option<string>("--preset") { Description = "The task preset whose modules lora adapts (default update-knowledge).", DefaultValueFactory = _ => "update-knowledge" };
        var json = new Option<bool>("--json") { Description = "Print JSON (one object; fields in the README) instead of the table." };
        var modelAt = new Option<string?>("--model-at")
        {
            Description = "B,T,LAYERS: model the step at this batch, length and depth instead, by scaling this run's launches with the cost formulas " +
                          "(for a step too large to run here, e.g. 4,2048,32 from an emulated run at --layers 2); every figure is then modelled.",
        };
        var trace = new Option<string?>("--trace") { Description = "Write the measured step as a Chrome trace (Perfetto opens it): measured durations on cpu and cuda, modelled on the emulator." };
        var graphs = new Option<bool>("--cuda-graphs")
        {
            Description = "With --what decode on a CUDA device: measure a token replayed from the captured CUDA graph, as generation runs it (one graph launch, one host read).",
        };
        var command = new Command("profile", "Measure one step: every launch, GEMM, host sync and allocation, with modelled H100/H200 times.");
        foreach (var option in device.All.Concat([model, config, layers, batch, seq, what, preset, json, modelAt, trace, graphs])) command.Options.Add(option);
        command.SetAction(result => CommandErrors.Guard(error, () =>
        {
            var request = device.Read(result);
            var options = new ProfileOptions
            {
                Device = request.Device, DType = request.DType, ModelDirectory = result.GetValue(model),
                Config = ReadConfig(result.GetValue(config) ?? "embedded", result.GetValue(model)), Layers = result.GetValue(layers),
                Batch = result.GetValue(batch), Sequence = result.GetValue(seq), What = ReadWhat(result.GetValue(what) ?? ""),
                Preset = result.GetValue(preset) ?? "update-knowledge", ModelAt = ReadModelAt(result.GetValue(modelAt)), CudaGraphs = result.GetValue(graphs),
            };
            string? tracePath = result.GetValue(trace);
            if (tracePath is not null) CheckTracePath(tracePath);
            var report = Run(options, error);
            if (tracePath is not null) File.WriteAllText(tracePath, report.ToChromeTrace());
            if (result.GetValue(json)) output.WriteLine(report.ToJson());
            else Render(report, output);
            return 0;
        }));
        return command;
    }

    private static Phi2Config? ReadConfig(string text, string? modelDirectory) => text.Trim().ToLowerInvariant() switch
    {
        "embedded" => null,
        "phi2" or "phi-2" when modelDirectory is null => Phi2Config.Phi2,
        "phi2" or "phi-2" => throw new Phi2Exception("--config phi2 and --model are exclusive: a model folder has its own config"),
        _ => throw new Phi2Exception($"--config \"{text}\" is not one of embedded, phi2"),
    };

    private static (int, int, int)? ReadModelAt(string? text)
    {
        if (text is null) return null;
        var parts = text.Split(',');
        int[] values = new int[3];
        if (parts.Length != 3 || !parts.Select((p, i) => int.TryParse(p.Trim(), System.Globalization.NumberStyles.None,
                System.Globalization.CultureInfo.InvariantCulture, out values[i]) && values[i] > 0).All(ok => ok))
            throw new Phi2Exception($"--model-at \"{text}\" is not B,T,LAYERS (three whole numbers from 1, e.g. 4,2048,32)");
        return (values[0], values[1], values[2]);
    }

    private static ProfileWorkload ReadWhat(string text) => text.Trim().ToLowerInvariant() switch
    {
        "train" => ProfileWorkload.Train,
        "lora" => ProfileWorkload.Lora,
        "decode" => ProfileWorkload.Decode,
        "prefill" => ProfileWorkload.Prefill,
        _ => throw new Phi2Exception($"--what \"{text}\" is not one of train, lora, decode, prefill"),
    };

    private static void CheckTracePath(string path)
    {
        if (Directory.Exists(path)) throw new Phi2Exception($"--trace {path} is a folder; expected a file to write");
        string? folder = Path.GetDirectoryName(Path.GetFullPath(path));
        if (folder is not null && !Directory.Exists(folder)) throw new Phi2Exception($"--trace {path}: the folder {folder} does not exist");
    }

    private static ProfileReport Run(ProfileOptions options, TextWriter error)
    {
        var stages = new StageProgress(error);
        if (!stages.Interactive)
            return ProfileRun.Run(options, new Progress<string>(stage => error.WriteLine($"profile: {stage}")));
        ProfileReport report = null!;
        stages.Console.Status().Start("profile: loading", context =>
            report = ProfileRun.Run(options, new SynchronousProgress(stage => context.Status($"profile: {stage}"))));
        return report;
    }

    private sealed class SynchronousProgress(Action<string> report) : IProgress<string>
    {
        public void Report(string value) => report(value);
    }

    private static void Render(ProfileReport report, TextWriter output)
    {
        var console = CliConsole.Create(output);
        bool measured = report.MeasuredMs is not null;
        console.Write(new Rule($"[bold]phi2 profile[/]: {report.What} on {Markup.Escape(report.Device)}, B {report.Batch}, T {report.Sequence}"));
        var table = new Table().AddColumns("kernel / op", "calls", "bytes", "flops", "flop/byte");
        if (measured) table.AddColumn("measured ms");
        table.AddColumns("H100 ms (modelled)", "H200 ms (modelled)");
        for (int i = 1; i < table.Columns.Count; i++) table.Columns[i].RightAligned();
        foreach (var row in report.Rows)
        {
            var cells = new List<string> { Markup.Escape(row.Name), row.Calls.ToString("N0"), Size(row.Bytes), Count(row.Flops), row.Bytes > 0 ? row.Intensity.ToString("F2") : "-" };
            if (measured) cells.Add(row.MeasuredMs is { } ms ? ms.ToString("F3") : "-");
            cells.Add(row.ModelH100Ms is { } h100 ? h100.ToString("F4") : "-");
            cells.Add(row.ModelH200Ms is { } h200 ? h200.ToString("F4") : "-");
            table.AddRow(cells.ToArray());
        }
        console.Write(table);
        console.WriteLine($"launches {report.Launches:N0}, host syncs {report.HostSyncs:N0}, driver allocations {report.Allocations:N0}, " +
                          $"bytes {Size(report.Bytes)}, flops {Count(report.Flops)}" + (measured ? $", measured {report.MeasuredMs:F2} ms" : ""));
        if (report.PeakBytesInUse.Count > 0)
            console.WriteLine("peak device memory: " + string.Join(", ", report.PeakBytesInUse.OrderBy(p => p.Key).Select(p => $"{p.Key.ToString().ToLowerInvariant()} {Size(p.Value)}")));
        double tokensPerSecond = report.Tokens / (report.ModelH100Ms / 1e3);
        console.WriteLine($"modelled step (a roofline model, not a measurement): H100 SXM {report.ModelH100Ms:F3} ms ({tokensPerSecond:N0} tokens/s, " +
                          $"MFU {100 * report.ModelH100Mfu:F1} %), H200 {report.ModelH200Ms:F3} ms (MFU {100 * report.ModelH200Mfu:F1} %)");
        console.WriteLine(ModelFlops.Convention);
    }

    private static string Size(long bytes) => bytes switch
    {
        >= 1L << 30 => $"{bytes / (double)(1L << 30):F2} GiB",
        >= 1L << 20 => $"{bytes / (double)(1L << 20):F2} MiB",
        >= 1L << 10 => $"{bytes / 1024.0:F1} KiB",
        _ => $"{bytes} B",
    };

    private static string Count(long flops) => flops switch
    {
        >= 1_000_000_000 => $"{flops / 1e9:F2} G",
        >= 1_000_000 => $"{flops / 1e6:F2} M",
        >= 1_000 => $"{flops / 1e3:F1} k",
        _ => flops.ToString(),
    };
}
