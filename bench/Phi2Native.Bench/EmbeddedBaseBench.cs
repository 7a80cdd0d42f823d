using System.Globalization;
using Phi2Native.Backends.Cpu;
using Phi2Native.Embedded;
using Phi2Native.Text;

namespace Phi2Native.Bench;

/// <summary>
/// The pretrained base: runs <see cref="EmbeddedBase"/>'s recipe (full-parameter training of the embedded model on
/// Genesis) and checks that it reproduces the weights byte for byte (SHA-256; exit code 1 when it does not): the
/// shipped ones on 256-bit vectors, the recorded 512-bit result on a machine with AVX-512 (unless run with
/// DOTNET_PreferredVectorBitWidth=256).
/// Prints the Genesis validation curve, then the made base's loss on the held-out chapters of Genesis and on Exodus,
/// which it has never seen. With overrides (<c>--steps</c>, <c>--lr</c>, ...) it is a sweep for choosing the recipe and
/// checks no hash.
/// </summary>
internal static class EmbeddedBaseBench
{
    public static int Run(ArgReader args)
    {
        var recipe = EmbeddedBase.Settings;
        var settings = recipe with
        {
            Steps = args.Int("steps", recipe.Steps),
            LearningRate = args.Double("lr", recipe.LearningRate),
            BatchSize = args.Int("batch", recipe.BatchSize),
            WarmupSteps = args.Int("warmup", recipe.WarmupSteps, min: 0),
            WeightDecay = args.Double("weight-decay", recipe.WeightDecay),
            ResidualDropout = args.String("dropout", "") is { Length: > 0 } dropout ? double.Parse(dropout, CultureInfo.InvariantCulture) : recipe.ResidualDropout,
        };
        int first = args.Int("first", 0, min: 0);
        string keep = args.String("out", "");
        bool markdown = args.Flag("markdown");
        args.RejectUnknown();
        bool isRecipe = settings == recipe;

        Console.WriteLine($"{DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, .NET {Environment.Version}, CPU backend, fp32, {Environment.ProcessorCount} threads, " +
                          $"Vector512 {(System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated ? "on" : "off")}");
        Console.WriteLine($"{(isRecipe ? "the recipe" : "a sweep (not the recipe)")}: B={settings.BatchSize} T={settings.MaxLength} lr {settings.LearningRate} " +
                          $"warmup {settings.WarmupSteps} steps {settings.Steps} weight decay {settings.WeightDecay} clip {settings.MaxGradientNorm} " +
                          $"resid dropout {settings.ResidualDropout?.ToString(CultureInfo.InvariantCulture) ?? "none"} data seed {settings.DataSeed}" +
                          (first > 0 ? $", stopped after step {first}" : ""));
        string folder = Path.Combine(Path.GetTempPath(), $"phi2native-base-bench-{Guid.NewGuid():N}");
        Directory.CreateDirectory(folder);
        try
        {
            string path = keep.Length > 0 ? Path.GetFullPath(keep) : Path.Combine(folder, "base.safetensors");
            var table = new Table("step", "seconds", "train loss", "Genesis validation loss");
            double seconds = 0, trainSum = 0;
            int trainCount = 0;
            string hash = EmbeddedBase.Make(settings, path, trainer =>
            {
                trainer.StepCompleted += m => { trainSum += m.Loss; trainCount++; seconds = m.Seconds; };
                trainer.Evaluated += e =>
                {
                    string train = trainCount == 0 ? "" : (trainSum / trainCount).ToString("F4", CultureInfo.InvariantCulture);
                    table.Add(e.Step.ToString(CultureInfo.InvariantCulture), seconds.ToString("F1", CultureInfo.InvariantCulture), train,
                        e.Loss.ToString("F4", CultureInfo.InvariantCulture));
                    Console.WriteLine($"step {e.Step}: {seconds:F1} s, train {train}, Genesis validation {e.Loss:F4}");
                    (trainSum, trainCount) = (0, 0);
                };
            }, stopAfterSteps: first > 0 ? first : null);
            Console.WriteLine();
            table.Write(Console.Out, markdown);
            Console.WriteLine();

            var tokenizer = EmbeddedDefault.Tokenizer();
            using var model = EmbeddedDefault.CreateModel(CpuBackend.Default, path);
            double genesis = EmbeddedEvaluation.MeanLoss(model, EmbeddedBook.Genesis.PackedRows(tokenizer, settings.MaxLength).Validation, settings.BatchSize);
            double exodus = EmbeddedEvaluation.MeanLoss(model, EmbeddedBook.Exodus.PackedRows(tokenizer, settings.MaxLength).Validation, settings.BatchSize);
            Console.WriteLine($"the base's loss: Genesis held-out chapters {genesis:F4}, Exodus held-out chapters {exodus:F4} (never seen)");
            var generator = new Generator(model, tokenizer);
            string prompt = "And God said unto";
            var ids = generator.Generate(prompt, new GenerationOptions { MaxNewTokens = 40 }).Tokens;
            Console.WriteLine($"greedy: {prompt}{tokenizer.Decode(ids).ReplaceLineEndings(" / ")}");
            Console.WriteLine($"{new FileInfo(path).Length:N0} bytes, SHA-256 {hash}");
            if (!isRecipe || first > 0) return 0;
            // The shipped bytes come from 256-bit vectors; another width is checked against its own recorded result.
            int width = EmbeddedBase.VectorWidth;
            string? reference = EmbeddedBase.ReferenceSha256(width);
            if (hash == EmbeddedBase.ShippedSha256)
                Console.WriteLine("reproduced: the same bytes as the shipped src/Phi2Native/Embedded/base.safetensors");
            else if (hash == reference)
                Console.WriteLine($"reproduced the recipe's recorded result on {width}-bit vectors; the shipped base, made with " +
                                  $"{EmbeddedBase.ShippedVectorWidth}-bit ones, comes out with DOTNET_PreferredVectorBitWidth={EmbeddedBase.ShippedVectorWidth}");
            else
                Console.WriteLine(reference is null
                    ? $"NOT CHECKED: no result of the recipe is recorded for {width}-bit vectors (the shipped base, {EmbeddedBase.ShippedVectorWidth}-bit: {EmbeddedBase.ShippedSha256})"
                    : $"NOT REPRODUCED: on {width}-bit vectors the recipe gave {reference} before");
            return hash == reference ? 0 : 1;
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}
