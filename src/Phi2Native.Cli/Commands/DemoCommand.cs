using System.CommandLine;
using System.Diagnostics;
using Phi2Native.Autograd;
using Phi2Native.Backends.Cpu;
using Phi2Native.FineTuning;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;
using Spectre.Console;

namespace Phi2Native.Cli.Commands;

/// <summary>
/// `phi2 demo`: the main job on the embedded default. For now: one training-mode forward and backward pass of
/// a built-in tiny Phi-2-architecture model on random tokens, printing the loss and every module's gradient norm.
/// </summary>
internal static class DemoCommand
{
    public static Command Create(TextWriter output, TextWriter error)
    {
        var seed = new Option<int>("--seed") { Description = "Seed of the weights and the text windows.", DefaultValueFactory = _ => EmbeddedDefault.DefaultSeed };
        var batch = new Option<int>("--batch-size") { Description = "Sequences per batch (B).", DefaultValueFactory = _ => 4 };
        var length = new Option<int>("--length") { Description = "Tokens per sequence (T).", DefaultValueFactory = _ => 64 };
        var command = new Command("demo", "Run a forward and backward pass of the embedded tiny Phi-2-architecture model on its text.") { seed, batch, length };
        command.SetAction(result => CommandErrors.Guard(error, () =>
            Run(result.GetValue(seed), result.GetValue(batch), result.GetValue(length), output)));
        return command;
    }

    public static int Run(int seed, int batch, int length, TextWriter output)
    {
        var config = EmbeddedDefault.Config;
        if (batch <= 0) throw new ModelInputException($"--batch-size must be positive, got {batch}");
        if (length < 2 || length > config.MaxPositionEmbeddings)
            throw new ModelInputException($"--length must be in [2, {config.MaxPositionEmbeddings}], got {length}");
        var console = CliConsole.Create(output);
        console.Write(new Rule("[bold]Phi2Native demo[/]"));
        console.MarkupLine("[yellow]" + Markup.Escape(EmbeddedDefault.Description) + "[/]");
        console.MarkupLine($"V={config.VocabSize} C={config.HiddenSize} layers={config.NumHiddenLayers} H={config.NumAttentionHeads} " +
                           $"D={config.HeadDim} rotary={config.RotaryDim} B={batch} T={length}, CPU backend, {Environment.ProcessorCount} threads");

        using var phi = EmbeddedDefault.CreateModel(CpuBackend.Default, seed);
        phi.Training = true;
        phi.SetRequiresGrad(true);
        // B windows of the shipped text, at offsets drawn from the seed.
        var text = EmbeddedDefault.Tokenizer().Encode(EmbeddedDefault.TrainingText);
        var random = new Random(seed);
        var tokens = Enumerable.Range(0, batch).SelectMany(_ => text.Skip(random.Next(text.Length - length)).Take(length)).ToArray();
        double loss;
        var forwardClock = Stopwatch.StartNew();
        TimeSpan forwardTime, backwardTime;
        using (TensorScope.Begin())
        using (var tape = GradientTape.Begin())
        {
            var logits = phi.Forward(phi.CreateInputIds(tokens, batch));
            var lossTensor = phi.CausalLanguageModelLoss(logits, tokens);
            loss = lossTensor.Item();
            forwardTime = forwardClock.Elapsed;
            var backwardClock = Stopwatch.StartNew();
            tape.Backward(lossTensor);
            backwardTime = backwardClock.Elapsed;
            console.MarkupLine($"loss [bold]{loss:F4}[/] (uniform guess: ln V = {Math.Log(config.VocabSize):F4}); " +
                               $"forward {forwardTime.TotalMilliseconds:F0} ms, backward {backwardTime.TotalMilliseconds:F0} ms ({tape.BackwardOpsRun} ops)");
        }

        var table = new Table().AddColumns("module", "parameters", "gradient norm");
        table.Columns[1].RightAligned();
        table.Columns[2].RightAligned();
        foreach (var module in phi.LeafModules())
        {
            double sumOfSquares = module.Parameters().Sum(p => p.Grad is null ? 0 : phi.Backend.SumOfSquares(p.Grad));
            long count = module.Parameters().Sum(p => p.ElementCount);
            table.AddRow(module.Name, count.ToString("N0"), Math.Sqrt(sumOfSquares).ToString("E3"));
        }
        console.Write(table);
        console.MarkupLine("To look inside a real Phi-2, point the engine at its folder (config.json + safetensors):");
        console.MarkupLine("  [grey]phi2 trace --model /path/to/phi-2 --ids 50256,464,3290 --out trace.safetensors --grads[/]");
        return 0;
    }
}
