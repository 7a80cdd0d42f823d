using System.CommandLine;
using Phi2Native.FineTuning.Selection;
using Phi2Native.Hosting;
using Spectre.Console;

namespace Phi2Native.Cli.Commands;

/// <summary>
/// `phi2 layers`: every module of the model with its shape, parameters, role (<see cref="ModuleRole"/>) and whether it
/// trains, the trainable share, and the memory a run needs; read from config.json alone, no weights loaded.
/// </summary>
internal static class LayersCommand
{
    public static Command Create(TextWriter output, TextWriter error)
    {
        var model = new Option<string?>("--model") { Description = "Model folder (default: the embedded tiny model); only config.json is read." };
        var selection = new SelectionOptions();
        var batch = new Option<int>("--batch-size") { Description = "B for the activation memory estimate.", DefaultValueFactory = _ => 4 };
        var length = new Option<int>("--max-length") { Description = "T for the activation memory estimate.", DefaultValueFactory = _ => 256 };
        var command = new Command("layers", "Show every module, its role and whether it trains, the trainable share and the memory a run needs.");
        foreach (var option in new Option[] { model }.Concat(selection.All).Concat([batch, length])) command.Options.Add(option);
        command.SetAction(result => CommandErrors.Guard(error, () =>
        {
            var config = ModelSource.LoadConfig(result.GetValue(model), warning => error.WriteLine($"warning: {warning}"));
            var plan = TrainingPlan.Create(config, selection.Reader(result)(config));
            Render(plan, result.GetValue(batch), result.GetValue(length), output);
            return 0;
        }));
        return command;
    }

    private static void Render(TrainingPlan plan, int batch, int time, TextWriter output)
    {
        if (batch <= 0 || time <= 0) throw new Phi2Exception($"--batch-size and --max-length must be positive, got {batch} and {time}");
        var console = CliConsole.Create(output);
        var c = plan.Config;
        console.Write(new Rule($"[bold]Phi-2 architecture[/]: {c.NumHiddenLayers} layers, C={c.HiddenSize}, MLP {c.IntermediateSize}, H={c.NumAttentionHeads}, V={c.VocabSize}"));
        // The true data flow: one LayerNorm feeds attention and the MLP side by side; both add into the residual stream.
        console.WriteLine(
            """
              h = embed_tokens(ids)
              each layer:  x = input_layernorm(h)        one LayerNorm feeds both branches
                           h = h + dense(attention(q_proj(x), k_proj(x), v_proj(x)))
                                 + fc2(gelu_new(fc1(x)))  the MLP runs beside attention
              logits = lm_head(final_layernorm(h))
            """);
        var table = new Table().AddColumns("module", "shape", "parameters", "trains", "role", "mnemonic");
        table.Columns[2].RightAligned();
        foreach (var row in plan.Rows)
        {
            string trains = row.Training switch
            {
                "frozen" => "[grey]frozen[/]",
                "full" => "[yellow]full[/]",
                var lora => $"[green]{lora}[/]",
            };
            table.AddRow(Markup.Escape(row.Name), Markup.Escape($"[{string.Join(", ", row.Shape)}]"), row.Parameters.ToString("N0"), trains,
                Markup.Escape(row.Role?.Role ?? ""), Markup.Escape(row.Role?.Mnemonic ?? ""));
        }
        console.Write(table);
        double share = plan.TotalParameters == 0 ? 0 : 100.0 * plan.TrainableParameters / plan.TotalParameters;
        console.MarkupLine($"trainable: [bold]{plan.TrainableParameters:N0}[/] of {plan.TotalParameters:N0} parameters ({share:F3}%)");
        console.MarkupLine(plan.LowestTrainedLayer is { } lowest
            ? $"backward stops at layer {lowest}: layers below it run forward only and keep no activations"
            : "no decoder layer trains: backward runs only through the head");
        var memory = plan.EstimateMemory(batch, time);
        var memoryTable = new Table().AddColumns("memory (estimate, fp32 CPU)", $"B={batch} T={time}");
        memoryTable.Columns[1].RightAligned();
        foreach (var (what, bytes) in new[]
                 {
                     ("weights", memory.Weights), ("LoRA parameters", memory.TrainableParameters), ("gradients", memory.Gradients),
                     ("AdamW state (2 moments)", memory.OptimizerState), ("activations kept for backward", memory.Activations), ("total", memory.Total),
                 })
            memoryTable.AddRow(what, Size(bytes));
        console.Write(memoryTable);
    }

    internal static string Size(long bytes) => bytes switch
    {
        >= 1L << 30 => $"{bytes / (double)(1L << 30):F2} GiB",
        >= 1L << 20 => $"{bytes / (double)(1L << 20):F1} MiB",
        _ => $"{bytes / 1024.0:F1} KiB",
    };
}
