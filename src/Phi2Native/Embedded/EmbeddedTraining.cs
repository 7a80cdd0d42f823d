using Phi2Native.FineTuning.Data;
using Phi2Native.FineTuning.Lora;
using Phi2Native.FineTuning.Training;
using Phi2Native.Models.Phi2;

namespace Phi2Native.Embedded;

/// <summary>
/// Training of a model on packed rows of the embedded text, set up the one way <c>phi2 demo</c>, the pretrained base
/// (<see cref="EmbeddedBase"/>) and the embedded bench run it: batches of <see cref="EmbeddedTrainingSettings.BatchSize"/>
/// rows in the order of <see cref="EmbeddedTrainingSettings.DataSeed"/>, trained by the <see cref="Trainer"/>
/// <c>phi2 finetune</c> uses, with AdamW, warmup and cosine decay to <see cref="EmbeddedTrainingSettings.Steps"/>,
/// clipping, and validation every few steps. What trains is a <see cref="LoraConfig"/>: by default every parameter
/// (the whole model as PEFT <c>modules_to_save</c>), or LoRA adapters on the layers a selection picks.
/// </summary>
/// <remarks>
/// The model stays the caller's; this owns the trainable wrapping (<see cref="Trainable"/>), which the model computes
/// through until <see cref="Dispose"/>, which detaches the adapters and gives modules trained in full back their
/// original weights (<see cref="LoraModel.Dispose"/>): generate from, evaluate or save the trained model before
/// disposing this. The trainer's checkpoints
/// go to a scratch folder that <see cref="Train"/> deletes when it returns.
/// </remarks>
public sealed class EmbeddedTraining : IDisposable
{
    private readonly TrainingRows _validation;

    /// <summary>Wraps <paramref name="model"/> for training on <paramref name="training"/> with <paramref name="settings"/>.</summary>
    /// <param name="model">The model to train (e.g. <see cref="EmbeddedDefault.CreateModel(Tensors.IBackend, Tensors.DType)"/> or <see cref="EmbeddedDefault.CreateRandomModel(Tensors.IBackend, int)"/>).</param>
    /// <param name="training">Training rows (<see cref="EmbeddedDefault.PackedRows"/>).</param>
    /// <param name="validation">Validation rows, evaluated at step 0 and every <paramref name="evaluateEvery"/> steps.</param>
    /// <param name="settings">Batch size, learning rate, warmup, steps, weight decay, clipping and data seed.</param>
    /// <param name="evaluateEvery">Steps between validations (&gt; 0).</param>
    /// <param name="seed">The trainer's seed (dropout masks); null keeps <see cref="TrainingOptions.Seed"/>'s default.</param>
    /// <param name="selection">What trains (PEFT's rules); null trains every parameter.</param>
    public EmbeddedTraining(Phi2Model model, TrainingRows training, TrainingRows validation, EmbeddedTrainingSettings settings, int evaluateEvery,
        int? seed = null, LoraConfig? selection = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(training);
        ArgumentNullException.ThrowIfNull(validation);
        ArgumentNullException.ThrowIfNull(settings);
        _validation = validation;
        Loader = new BatchLoader(training, new DataOrder(training.Count, settings.BatchSize, settings.DataSeed));
        var options = new TrainingOptions
        {
            // Enough epochs never to end the run: MaxSteps does (the loader reshuffles each epoch).
            Epochs = int.MaxValue / Math.Max(Loader.BatchesPerEpoch, 1), MaxSteps = settings.Steps, LearningRate = settings.LearningRate,
            WarmupSteps = settings.WarmupSteps, WeightDecay = settings.WeightDecay, MaxGradientNorm = settings.MaxGradientNorm,
            EvaluateEvery = evaluateEvery, ResidualDropout = settings.ResidualDropout,
        };
        Options = seed is int s ? options with { Seed = s } : options;
        Options.Validate();
        Trainable = LoraModel.Create(model, selection ?? EveryParameter);
    }

    /// <summary>Every parameter trains: the whole model as PEFT modules_to_save.</summary>
    public static LoraConfig EveryParameter { get; } = new() { ModulesToSave = ["model", "lm_head"] };

    /// <summary>The batches of the training rows.</summary>
    public BatchLoader Loader { get; }

    /// <summary>The trainer's options.</summary>
    public TrainingOptions Options { get; }

    /// <summary>The model with what trains made trainable (adapters attached, modules trained in full unfrozen), the rest frozen.</summary>
    public LoraModel Trainable { get; }

    /// <summary>
    /// Runs the training: makes the <see cref="Trainer"/>, lets <paramref name="configure"/> subscribe to its events,
    /// runs it with <paramref name="run"/> (default: <see cref="Trainer.Run"/>; e.g. a progress display), then frees it
    /// and deletes its scratch folder.
    /// </summary>
    public TrainingResult Train(Action<Trainer>? configure = null, Func<Trainer, TrainingResult>? run = null)
    {
        string scratch = Path.Combine(Path.GetTempPath(), $"phi2native-embedded-training-{Guid.NewGuid():N}");
        try
        {
            using var trainer = new Trainer(Trainable, Loader, _validation, Options, scratch);
            configure?.Invoke(trainer);
            return run is null ? trainer.Run() : run(trainer);
        }
        finally
        {
            if (Directory.Exists(scratch)) Directory.Delete(scratch, recursive: true);
        }
    }

    /// <summary>Frees the trainable wrapping (the model itself stays the caller's).</summary>
    public void Dispose() => Trainable.Dispose();
}
