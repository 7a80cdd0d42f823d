using System.Diagnostics;
using Phi2Native.FineTuning.Data;
using Phi2Native.FineTuning.Lora;
using Phi2Native.FineTuning.Selection;
using Phi2Native.FineTuning.Training;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;
using Phi2Native.Text;

namespace Phi2Native.Embedded;

/// <summary>
/// <c>phi2 demo</c>'s run: the mission on the embedded model. The pretrained base (Genesis only) gets LoRA adapters of
/// a task preset on a chosen layer range, the rest frozen, and is fine-tuned on Exodus, which it has never seen. The
/// run measures what the frozen base saves (trainable against frozen parameters, backward ops skipped below the lowest
/// trained layer), the held-out loss on Exodus and on Genesis before and after, and a seeded sampled continuation of
/// one prompt from the base and from base + adapter.
/// </summary>
public static class EmbeddedLoraDemo
{
    /// <summary>
    /// Runs the demo on <paramref name="backend"/>.
    /// </summary>
    /// <param name="backend">Where the base is loaded and trained (the CPU backend for a repeatable run).</param>
    /// <param name="settings">The preset, layers, LoRA and training settings, and the prompt.</param>
    /// <param name="configure">Subscribes to the trainer's events (progress, losses).</param>
    /// <param name="run">Runs the trainer (default: <see cref="Trainer.Run"/>; e.g. a progress display).</param>
    /// <exception cref="Phi2Exception">An unknown preset, a bad layer range, a preset that trains nothing inside the
    /// layers, or settings out of range; the message names the setting.</exception>
    public static LoraDemoResult Run(IBackend backend, LoraDemoSettings settings, Action<Trainer>? configure = null, Func<Trainer, TrainingResult>? run = null)
    {
        ArgumentNullException.ThrowIfNull(backend);
        return Run(() => EmbeddedDefault.CreateModel(backend), settings, configure, run);
    }

    /// <summary>Runs the demo on the base <paramref name="createBase"/> makes (a base not yet shipped, for the bench's sweeps).</summary>
    internal static LoraDemoResult Run(Func<Phi2Model> createBase, LoraDemoSettings settings, Action<Trainer>? configure = null, Func<Trainer, TrainingResult>? run = null)
    {
        ArgumentNullException.ThrowIfNull(createBase);
        ArgumentNullException.ThrowIfNull(settings);
        var plan = Plan(settings);
        var tokenizer = EmbeddedDefault.Tokenizer();
        int[] promptIds = tokenizer.Encode(settings.Prompt);
        var training = settings.Training;
        var (exodusTraining, exodusValidation) = EmbeddedBook.Exodus.PackedRows(tokenizer, training.MaxLength);
        var genesisValidation = EmbeddedBook.Genesis.PackedRows(tokenizer, training.MaxLength).Validation;

        var backward = BackwardWork.Measure(createBase, plan.Selection, plan.LowestTrainedLayer,
            FirstBatch(exodusTraining, training.BatchSize));

        using var model = createBase();
        var generation = new GenerationOptions { MaxNewTokens = settings.MaxNewTokens, Sampling = settings.Sampling };
        var before = Score(model, exodusValidation, genesisValidation, training.BatchSize);
        string baseText = Continue(model, tokenizer, promptIds, generation);

        using var trainingRun = new EmbeddedTraining(model, exodusTraining, exodusValidation, training,
            Math.Max(1, training.Steps / settings.Validations), selection: plan.Selection);
        long trainable = trainingRun.Trainable.TrainableParameters().Sum(p => p.ElementCount);
        long frozen = model.Parameters().Sum(p => p.ElementCount);
        var curve = new List<EvaluationMetrics>();
        double seconds = 0;
        int steps = 0;
        var clock = Stopwatch.StartNew();
        trainingRun.Train(trainer =>
        {
            trainer.Evaluated += curve.Add;
            trainer.StepCompleted += m => (seconds, steps) = (m.Seconds, m.Step);
            configure?.Invoke(trainer);
        }, run);
        clock.Stop();
        // Scored and sampled while the adapters are attached: disposing the training run detaches them.
        var after = Score(model, exodusValidation, genesisValidation, training.BatchSize);
        string adaptedText = Continue(model, tokenizer, promptIds, generation);
        return new LoraDemoResult
        {
            Preset = plan.Preset, Layers = plan.Layers, Selection = plan.Selection, LowestTrainedLayer = plan.LowestTrainedLayer,
            TrainableParameters = trainable, FrozenParameters = frozen, Backward = backward,
            ExodusLossBefore = before.Exodus, ExodusLossAfter = after.Exodus, GenesisLossBefore = before.Genesis, GenesisLossAfter = after.Genesis,
            ExodusValidationTokens = exodusValidation.TargetCount, GenesisValidationTokens = genesisValidation.TargetCount,
            ExodusTrainingRows = exodusTraining.Count,
            Curve = curve, Steps = steps, TrainingSeconds = seconds, WallSeconds = clock.Elapsed.TotalSeconds,
            BaseContinuation = baseText, AdaptedContinuation = adaptedText,
        };
    }

    /// <summary>What <paramref name="settings"/> selects: the preset's LoRA targets on the layers, checked before anything loads.</summary>
    /// <exception cref="Phi2Exception">As <see cref="Run(IBackend, LoraDemoSettings, Action{Trainer}?, Func{Trainer, TrainingResult}?)"/>.</exception>
    public static LoraDemoPlan Plan(LoraDemoSettings settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        settings.Validate();
        var config = EmbeddedDefault.Config;
        var preset = TaskPreset.Get(settings.Preset);
        var layers = TrainingSelection.ParseLayers(settings.Layers, config.NumHiddenLayers)
                     ?? Enumerable.Range(0, config.NumHiddenLayers).ToList();
        var selection = TrainingSelection.Build(preset.Modules, [], layers, settings.Rank, settings.Alpha, dropout: 0);
        // The layer range is the point of the demo: a preset that also adapts the embedding trains from layer 0 down.
        int lowest = TrainingPlan.Create(config, selection).LowestTrainedLayer
                     ?? throw new Phi2Exception($"preset \"{preset.Name}\" trains nothing inside the layers; pick one with attention or MLP modules");
        if (lowest == 0 && preset.TrainsEmbeddings)
            throw new Phi2Exception($"preset \"{preset.Name}\" adapts embed_tokens, so backward runs to the bottom whatever --layers says; " +
                                    "pick a preset without it (e.g. update-knowledge, fluency, reasoning)");
        return new LoraDemoPlan(preset, layers, selection, lowest);
    }

    private static TrainingBatch FirstBatch(TrainingRows rows, int batchSize) =>
        new BatchLoader(rows, new DataOrder(rows.Count, batchSize, seed: 0, shuffle: false)).Next();

    private static (double Exodus, double Genesis) Score(Phi2Model model, TrainingRows exodus, TrainingRows genesis, int batchSize) =>
        (EmbeddedEvaluation.MeanLoss(model, exodus, batchSize), EmbeddedEvaluation.MeanLoss(model, genesis, batchSize));

    private static string Continue(Phi2Model model, TextTokenizer tokenizer, int[] promptIds, GenerationOptions options) =>
        tokenizer.Decode(new Generator(model, tokenizer).Generate(promptIds, options).Tokens);
}
