using Phi2Native.Embedded;
using Spectre.Console;

namespace Phi2Native.Cli.Commands;

/// <summary>
/// `phi2 demo --make-base PATH`: runs the pretrained base's recipe (<see cref="EmbeddedBase"/>: the embedded model
/// trained on Genesis from seeded random weights, on the CPU backend) and writes its weights to PATH, then says whether
/// they are the shipped base byte for byte. This is how src/Phi2Native/Embedded/base.safetensors was made.
/// </summary>
internal static class DemoMakeBase
{
    public static int Run(string path, TextWriter output, TextWriter error, TextWriter notices)
    {
        if (path.Length == 0) throw new Phi2Exception("--make-base needs the path of the weights file to write");
        string full = Path.GetFullPath(path);
        if (Directory.Exists(full)) throw new Phi2Exception($"--make-base '{path}' is a folder; give the path of the weights file to write (e.g. base.safetensors)");
        string folder = Path.GetDirectoryName(full)!;
        if (!Directory.Exists(folder)) throw new Phi2Exception($"--make-base '{path}': the folder '{folder}' does not exist");

        var console = CliConsole.Create(output);
        var recipe = EmbeddedBase.Settings;
        console.Write(new Rule("[bold]Phi2Native demo[/]: making the pretrained base"));
        console.MarkupLine($"the embedded model from random weights (seed {EmbeddedDefault.DefaultSeed}), every parameter trained on Genesis's " +
                           $"{EmbeddedBook.Genesis.TrainingParagraphs.Count} training chapters: {recipe.Steps} steps of B={recipe.BatchSize} " +
                           $"T={recipe.MaxLength}, AdamW lr {recipe.LearningRate}, warmup {recipe.WarmupSteps}, cosine decay, weight decay {recipe.WeightDecay}, " +
                           $"data seed {recipe.DataSeed}; on the CPU backend, whose results do not depend on the number of threads");
        notices.WriteLine($"device: cpu ({Environment.ProcessorCount} threads), f32 (the base is always made on the CPU)");
        var width = EmbeddedBase.VectorWidth;
        if (width != EmbeddedBase.ShippedVectorWidth)
            console.MarkupLine($"[yellow]this machine computes with {width}-bit vectors, whose sums round differently from the {EmbeddedBase.ShippedVectorWidth}-bit " +
                               $"ones the shipped base was made with; to make exactly the shipped bytes, run with DOTNET_PreferredVectorBitWidth={EmbeddedBase.ShippedVectorWidth}[/]");

        string hash = EmbeddedBase.Make(full, trainer =>
            trainer.Evaluated += e => error.WriteLine($"step {e.Step}: Genesis held-out loss {e.Loss:F4}"),
            trainer => TrainingProgress.Run(trainer, new StageProgress(error), error, CancellationToken.None));

        console.MarkupLine($"wrote [bold]{Markup.Escape(full)}[/] ({new FileInfo(full).Length:N0} bytes), SHA-256 {hash}");
        string? reference = EmbeddedBase.ReferenceSha256(width);
        console.MarkupLine(hash == EmbeddedBase.ShippedSha256
            ? "[green]the same bytes as the shipped base (src/Phi2Native/Embedded/base.safetensors)[/]"
            : hash == reference
                ? $"[green]the recorded result of the recipe on {width}-bit vectors[/] (the shipped base, made on {EmbeddedBase.ShippedVectorWidth}-bit ones, is {EmbeddedBase.ShippedSha256})"
                : $"[red]differs from the shipped base[/] (SHA-256 {EmbeddedBase.ShippedSha256}{(reference is null ? "" : $"; on {width}-bit vectors the recipe gave {reference}")})");
        return 0;
    }
}
