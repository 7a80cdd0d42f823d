using System.Globalization;
using Phi2Native.Backends.Cpu;
using Phi2Native.Embedded;
using Phi2Native.FineTuning;
using Phi2Native.FineTuning.Data;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;
using Phi2Native.Text;

namespace Phi2Native.Bench;

/// <summary>
/// The embedded default model's training curve: full-parameter training with the Trainer `phi2 finetune` uses
/// (AdamW, warmup and cosine decay, clipping) on the shipped text, with the validation loss over the whole validation part at fixed steps.
/// Checks the claim the embedded default is built for: the validation loss falls below half its starting value
/// within about a minute of training on a 2-core CPU. Seconds count training steps only, not evaluation.
/// </summary>
/// <remarks>
/// Ends with a greedy continuation of a prompt from the text, to show what was learnt.
/// The options override the embedded dimensions, tokenizer and settings, for choosing them: <c>--tokenizer DIR</c>
/// takes another vocab.json + merges.txt (the model's vocabulary follows it).
/// </remarks>
internal static class EmbeddedBench
{
    public static int Run(ArgReader args)
    {
        var defaults = EmbeddedDefault.RecommendedTraining;
        var baseConfig = EmbeddedDefault.Config;
        string tokenizerFolder = args.String("tokenizer", "");
        var settings = defaults with
        {
            BatchSize = args.Int("batch", defaults.BatchSize),
            MaxLength = args.Int("length", defaults.MaxLength, min: 2),
            LearningRate = args.Double("lr", defaults.LearningRate),
            WarmupSteps = args.Int("warmup", defaults.WarmupSteps, min: 0),
            Steps = args.Int("steps", defaults.Steps),
            WeightDecay = args.Double("weight-decay", defaults.WeightDecay),
        };
        int evalEvery = args.Int("eval-every", Math.Max(1, settings.Steps / 10));
        int seed = args.Int("seed", EmbeddedDefault.DefaultSeed, min: 0);
        bool markdown = args.Flag("markdown");
        string prompt = args.String("prompt", "And the LORD said unto Moses,");
        var tokenizer = tokenizerFolder.Length > 0 ? TextTokenizer.FromModelFolder(tokenizerFolder) : EmbeddedDefault.Tokenizer();
        int endOfText = tokenizer.EndOfTextId ?? throw new ArgumentException("the tokenizer has no <|endoftext|>");
        int hidden = args.Int("hidden", baseConfig.HiddenSize), heads = args.Int("heads", baseConfig.NumAttentionHeads);
        var config = baseConfig with
        {
            VocabSize = tokenizerFolder.Length > 0 ? tokenizer.VocabularySize : baseConfig.VocabSize,
            HiddenSize = hidden,
            NumAttentionHeads = heads,
            IntermediateSize = args.Int("inner", hidden == baseConfig.HiddenSize ? baseConfig.IntermediateSize : 4 * hidden),
            NumHiddenLayers = args.Int("layers", baseConfig.NumHiddenLayers),
            RotaryDim = (int)(0.4 * (hidden / heads)) / 2 * 2,
            ResidPdrop = args.Double("dropout", baseConfig.ResidPdrop),
            BosTokenId = endOfText, EosTokenId = endOfText,
        };
        args.RejectUnknown();

        var (train, validation) = EmbeddedDefault.PackedRows(tokenizer, settings.MaxLength);
        return Train(config, settings, seed, evalEvery, train, validation, markdown, tokenizer, prompt);
    }

    private static int Train(Phi2Config config, EmbeddedTrainingSettings s, int seed, int evalEvery,
        TrainingRows train, TrainingRows validationRows, bool markdown, TextTokenizer tokenizer, string prompt)
    {
        var machine = Machine.Detect();
        foreach (string line in machine.Describe()) Console.WriteLine(line);
        long parameters = Phi2Model.ParameterShapes(config).Sum(p => p.Shape.Aggregate(1L, (a, b) => a * b));
        Console.WriteLine($"{DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, .NET {Environment.Version}, CPU backend, fp32, {Environment.ProcessorCount} threads");
        Console.WriteLine($"model: V={config.VocabSize} C={config.HiddenSize} layers={config.NumHiddenLayers} heads={config.NumAttentionHeads} " +
                          $"D={config.HeadDim} rotary={config.RotaryDim} MLP={config.IntermediateSize} resid_pdrop={config.ResidPdrop}, " +
                          $"{parameters:N0} parameters, seed {seed}");
        Console.WriteLine($"data: train {train.Summary}; validation {validationRows.Summary}");

        using var model = Phi2Model.CreateRandom(config, CpuBackend.Default, seed);
        // Every parameter trains, through the same Trainer `phi2 finetune` uses, set up as `phi2 demo` sets it up.
        using var run = new EmbeddedTraining(model, train, validationRows, s, evalEvery, seed);
        Console.WriteLine($"AdamW lr {s.LearningRate} (warmup {s.WarmupSteps}, cosine to 0 at step {s.Steps}), weight decay {s.WeightDecay}, " +
                          $"clip {s.MaxGradientNorm}, B={s.BatchSize} T={s.MaxLength}: {s.Steps * s.BatchSize * s.MaxLength:N0} tokens " +
                          $"= {(double)s.Steps * s.BatchSize / run.Loader.Rows.Count:F2} epochs");
        Console.WriteLine();

        var table = new Table("step", "seconds", "train loss", "validation loss", "val / start");
        double start = double.NaN, halvedAt = double.NaN, seconds = 0, trainSum = 0;
        int trainCount = 0;
        run.Train(trainer =>
        {
            trainer.StepCompleted += m => { trainSum += m.Loss; trainCount++; seconds = m.Seconds; };
            trainer.Evaluated += e =>
            {
                if (e.Step == 0)
                {
                    start = e.Loss;
                    table.Add("0", "0.0", "", start.ToString("F4", CultureInfo.InvariantCulture), "1.000");
                    Console.WriteLine($"step 0: validation loss {start:F4} (ln V = {Math.Log(config.VocabSize):F4})");
                    return;
                }
                if (double.IsNaN(halvedAt) && e.Loss < start / 2) halvedAt = seconds;
                table.Add(e.Step.ToString(CultureInfo.InvariantCulture), seconds.ToString("F1", CultureInfo.InvariantCulture),
                    (trainSum / trainCount).ToString("F4", CultureInfo.InvariantCulture), e.Loss.ToString("F4", CultureInfo.InvariantCulture),
                    (e.Loss / start).ToString("F3", CultureInfo.InvariantCulture));
                Console.WriteLine($"step {e.Step}: {seconds:F1} s, train {trainSum / trainCount:F4}, validation {e.Loss:F4}");
                (trainSum, trainCount) = (0, 0);
            };
        });
        Console.WriteLine();
        table.Write(Console.Out, markdown);
        Console.WriteLine();
        Console.WriteLine("train loss: mean over the steps since the previous row; validation loss: every validation token, evaluation mode.");
        Console.WriteLine(double.IsNaN(halvedAt)
            ? $"the validation loss never fell below half its start ({start / 2:F4}) in {seconds:F1} s"
            : $"validation loss below half its start ({start / 2:F4}) after {halvedAt:F1} s of training; {s.Steps} steps took {seconds:F1} s");
        Console.WriteLine($"greedy continuation: {prompt}{GreedyContinuation(model, tokenizer, prompt, 40).ReplaceLineEndings(" / ")}");
        return 0;
    }

    /// <summary>
    /// The argmax continuation of <paramref name="prompt"/>, one full forward per new token (no KV cache; a
    /// look at what the minute of training taught, not a generation benchmark).
    /// </summary>
    private static string GreedyContinuation(Phi2Model model, TextTokenizer tokenizer, string prompt, int tokens)
    {
        model.Training = false;
        var ids = tokenizer.Encode(prompt).ToList();
        int first = ids.Count, vocab = model.Config.VocabSize;
        for (int n = 0; n < tokens && ids.Count < model.Config.MaxPositionEmbeddings; n++)
        {
            using var scope = TensorScope.Begin();
            float[] logits = model.Forward(model.CreateInputIds(ids.ToArray())).ToSingleArray();
            var last = logits.AsSpan((ids.Count - 1) * vocab, vocab);
            int next = 0;
            for (int v = 1; v < vocab; v++)
                if (last[v] > last[next]) next = v;
            if (next == model.Config.EosTokenId) break;
            ids.Add(next);
        }
        return tokenizer.Decode(ids.Skip(first));
    }
}
