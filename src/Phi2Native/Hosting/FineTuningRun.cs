using Phi2Native.Cuda;
using Phi2Native.Embedded;
using Phi2Native.FineTuning.Data;
using Phi2Native.FineTuning.Lora;
using Phi2Native.FineTuning.Optim;
using Phi2Native.FineTuning.Selection;
using Phi2Native.FineTuning.Training;
using Phi2Native.Models.Phi2;
using Phi2Native.Text;

namespace Phi2Native.Hosting;

/// <summary>
/// A LoRA fine-tuning run, composed exactly as <c>phi2 finetune</c> composes it: the device, the base model and its
/// tokenizer, new tokens, the data and its batches, the adapters (new, or a checkpoint's to resume), the trainer, the
/// run folder (its lock, its checkpoints and their history, metrics.jsonl) and the adapter it writes. A host opens
/// one, subscribes to its events, and trains; the command line adds only its progress bar, loss.png and exit codes.
/// </summary>
/// <remarks>
/// <para>Stopping: <see cref="Train"/> takes a cancellation token; cancelling finishes the step in flight, writes a
/// checkpoint and returns <see cref="TrainingStop.Cancelled"/> (the host decides what cancels: the command line maps
/// SIGINT and SIGTERM to it). A loss or gradient that is not finite ends the run with <see cref="TrainingStop.NonFinite"/>
/// unless <see cref="TrainingOptions.SkipNonFiniteSteps"/> allows skipping it; the last good checkpoint stays on disk
/// and no invalid line reaches metrics.jsonl.</para>
/// <para>One run per output folder: a second run into a folder a live run holds is refused (an OS file lock, released
/// when the process ends however it ends).</para>
/// </remarks>
/// <example><code>
/// using var run = FineTuningRun.Open(new FineTuningOptions { DataPath = "train.jsonl", OutputDirectory = "run" });
/// run.StepCompleted += m => Console.WriteLine($"step {m.Step}/{m.TotalSteps}: loss {m.Loss:F4}");
/// var result = run.Train(cancellationToken);
/// if (result.Stop == TrainingStop.Completed)
/// {
///     using var engine = Phi2Engine.Load(adapterDirectory: result.AdapterDirectory);
///     Console.WriteLine(await engine.CompleteAsync("And God said"));
/// }
/// </code></example>
public sealed class FineTuningRun : IDisposable
{
    private readonly FineTuningOptions _options;
    private readonly RunFolder _folder;
    private readonly ComputeBackend _compute;
    private readonly Phi2Model _model;
    private readonly LoraModel _lora;
    private readonly Trainer _trainer;
    private readonly MetricsLog _metrics;
    private bool _trained, _disposed;

    private FineTuningRun(FineTuningOptions options, RunFolder folder, ComputeBackend compute, Phi2Model model, TextTokenizer tokenizer,
        LoraModel lora, Trainer trainer, MetricsLog metrics, string dataSummary, IReadOnlyDictionary<string, int> addedTokens)
    {
        _options = options;
        _folder = folder;
        _compute = compute;
        _model = model;
        Tokenizer = tokenizer;
        _lora = lora;
        _trainer = trainer;
        _metrics = metrics;
        DataSummary = dataSummary;
        AddedTokens = addedTokens;
        StartStep = trainer.Step;
        trainer.StepCompleted += m =>
        {
            metrics.Write(m);
            StepCompleted?.Invoke(m);
        };
        trainer.StepSkipped += s =>
        {
            metrics.Write(s);
            StepSkipped?.Invoke(s);
        };
        trainer.Evaluated += e =>
        {
            metrics.Write(e);
            Evaluated?.Invoke(e);
        };
        trainer.CheckpointSaved += directory => CheckpointSaved?.Invoke(directory);
    }

    /// <summary>The run's folder.</summary>
    public string OutputDirectory => _folder.Directory;

    /// <summary>Where it computes, on one line ("cpu (16 threads), f32", "emulated, f32 (...)").</summary>
    public string DeviceDescription => _compute.Description;

    /// <summary>The model being trained (the base with its adapters attached); after <see cref="Train"/>, ready to generate with (a <see cref="Generator"/> over it and <see cref="Tokenizer"/>).</summary>
    public Phi2Model Model => _model;

    /// <summary>The adapters and modules that train.</summary>
    public LoraModel Adapter => _lora;

    /// <summary>The tokenizer, with the run's added tokens.</summary>
    public TextTokenizer Tokenizer { get; }

    /// <summary>New tokens this run added, with their ids (empty when resuming: the checkpoint's are applied).</summary>
    public IReadOnlyDictionary<string, int> AddedTokens { get; }

    /// <summary>"N examples, ... rows; B batches of b x T per epoch": the data as it will be batched.</summary>
    public string DataSummary { get; }

    /// <summary>The step the run starts from: 0, or the resumed checkpoint's.</summary>
    public int StartStep { get; }

    /// <summary>Optimizer steps the run takes in all.</summary>
    public int TotalSteps => _trainer.TotalSteps;

    /// <summary>Parameters that train.</summary>
    public long TrainableParameters => _lora.TrainableParameters().Sum(p => p.ElementCount);

    /// <summary>Parameters of the model in all.</summary>
    public long TotalParameters => _model.Parameters().Sum(p => p.ElementCount);

    /// <summary>Training steps of the whole run so far (a run resumed in its own folder: the history before the resume too).</summary>
    public IReadOnlyList<StepMetrics> StepHistory => _metrics.Steps;

    /// <summary>Validation passes of the whole run so far.</summary>
    public IReadOnlyList<EvaluationMetrics> EvaluationHistory => _metrics.Evaluations;

    /// <summary>Raised after every optimizer step (on the thread that called <see cref="Train"/>); its line is in metrics.jsonl.</summary>
    public event Action<StepMetrics>? StepCompleted;

    /// <summary>Raised after a step skipped for a non-finite value (<see cref="TrainingOptions.SkipNonFiniteSteps"/>).</summary>
    public event Action<SkippedStep>? StepSkipped;

    /// <summary>Raised after every validation pass.</summary>
    public event Action<EvaluationMetrics>? Evaluated;

    /// <summary>Raised after every checkpoint, with its folder.</summary>
    public event Action<string>? CheckpointSaved;

    /// <summary>
    /// Checks the options, takes the output folder, loads the model, tokenizer, data and adapters (or the checkpoint
    /// to resume), and puts the folder's history in order. Nothing trains until <see cref="Train"/>.
    /// </summary>
    /// <exception cref="Phi2Exception">
    /// An option is out of range; the device cannot compute this (or cannot be opened); the folder is held by a live run
    /// or holds another run's checkpoints without <see cref="FineTuningOptions.Overwrite"/>; a file is missing,
    /// malformed or damaged (a checkpoint whose files do not match its manifest); the data has no usable example.
    /// </exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled while loading (nothing was trained or written but data files).</exception>
    public static FineTuningRun Open(FineTuningOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var folder = RunFolder.Acquire(options.OutputDirectory);
        var owned = new Stack<IDisposable>();
        owned.Push(folder);
        try
        {
            foreach (var note in folder.RemoveHalfMadeCheckpoints()) options.Notice?.Invoke(note);
            int? keptStep = folder.CheckStart(options.ResumeFrom, options.Overwrite);
            // A damaged checkpoint is refused before the model loads: every file is checked against its manifest.
            bool verified = options.ResumeFrom is not null && CheckpointManifest.Verify(options.ResumeFrom);
            cancellationToken.ThrowIfCancellationRequested();

            var compute = options.Backend is null
                ? ComputeBackend.Open(options.Device, options.DType, ComputeUse.Training, KernelSources(options))
                : ComputeBackend.Over(options.Backend, options.DType, ComputeUse.Training);
            owned.Push(compute);
            var model = ModelSource.LoadModel(options.ModelDirectory, compute.Backend, options.DType, options.Warn, options.LoadProgress);
            owned.Push(model);
            var tokenizer = ModelSource.LoadTokenizer(options.ModelDirectory, options.Warn);
            if (tokenizer.VocabularySize > model.Config.VocabSize)
                throw new Phi2Exception($"the tokenizer ({tokenizer.Source}) has ids up to {tokenizer.VocabularySize - 1}, beyond the model's vocab_size {model.Config.VocabSize}: they do not belong together");
            IReadOnlyDictionary<string, int> added = new Dictionary<string, int>();
            if (options.ResumeFrom is not null) NewTokens.Apply(tokenizer, options.ResumeFrom);
            else if (options.NewTokens.Count > 0) added = NewTokens.Add(tokenizer, model.Config, options.NewTokens);
            cancellationToken.ThrowIfCancellationRequested();

            var (loader, validationRows, summary) = LoadData(options, model.Config, tokenizer);
            var lora = options.ResumeFrom is null
                ? LoraModel.Create(model, WithNewTokenRows(options.Lora?.Invoke(model.Config) ?? DefaultLora(), tokenizer, options.Notice), seed: options.Training.Seed)
                : PeftAdapter.Load(model, options.ResumeFrom, options.Warn);
            owned.Push(lora);
            var trainer = new Trainer(lora, loader, validationRows, options.Training, folder.Directory)
            {
                CheckpointExtras = directory => NewTokens.Save(tokenizer, directory),
            };
            owned.Push(trainer);
            if (options.ResumeFrom is not null) TrainingCheckpoint.Restore(trainer, options.ResumeFrom, options.Warn, verified);
            if (options.ResumeFrom is not null && !verified)
                options.Warn?.Invoke($"{options.ResumeFrom} has no {CheckpointManifest.FileName} (written by an older version): its files cannot be checked");
            cancellationToken.ThrowIfCancellationRequested();

            // Only now, with everything loaded, does the folder change: a run refused above leaves it as it was.
            foreach (var note in folder.Begin(keptStep, DateTime.UtcNow)) options.Notice?.Invoke(note);
            var metrics = MetricsLog.Open(folder.Directory, keptStep, trainer.TotalSteps, options.Warn);
            return new FineTuningRun(options, folder, compute, model, tokenizer, lora, trainer, metrics, summary, added);
        }
        catch
        {
            while (owned.Count > 0) owned.Pop().Dispose();
            throw;
        }
    }

    /// <summary>
    /// Trains to the end, until <paramref name="cancellationToken"/> is cancelled (the step in flight finishes and a
    /// checkpoint is written), or until a loss or gradient is not finite. Then writes the adapter and added tokens at
    /// the folder's top (not after a non-finite stop whose last state was not finite either). Once per run.
    /// </summary>
    /// <exception cref="InvalidOperationException">The run has trained already.</exception>
    /// <exception cref="ObjectDisposedException">The run is disposed.</exception>
    public FineTuningResult Train(CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_trained) throw new InvalidOperationException("this run has trained already; open a new one (with ResumeFrom to continue it)");
        _trained = true;
        var result = _trainer.Run(cancellationToken);
        string? adapter = null;
        // After a non-finite stop the parameters are those of the last good step, unless an earlier update made them
        // non-finite: such an adapter is never written.
        if (result.Stop != TrainingStop.NonFinite || GlobalNorm.OfValues(_lora.TrainableParameters().ToList()).IsFinite)
        {
            PeftAdapter.Save(_lora, _folder.Directory, ModelSource.BaseName(_options.ModelDirectory));
            NewTokens.Save(Tokenizer, _folder.Directory);
            adapter = _folder.Directory;
        }
        string? lastCheckpoint = result.LastCheckpoint ?? CheckpointFolders.Steps(_folder.CheckpointRoot).Select(s => s.Path).LastOrDefault();
        return new FineTuningResult(result.Stop, result.Steps, _trainer.TotalSteps, lastCheckpoint, adapter, result.NonFinite, result.SkippedSteps);
    }

    /// <summary>Frees the optimizer state, adapters, model and a backend the run opened, and releases the output folder.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _metrics.Dispose();
        _trainer.Dispose();
        _lora.Dispose();
        _model.Dispose();
        _compute.Dispose();
        _folder.Dispose();
    }

    private static KernelSourceOptions KernelSources(FineTuningOptions options) =>
        (options.KernelSourceDirectory is { } folder
            ? new KernelSourceOptions { Directory = folder, Setting = $"{nameof(FineTuningOptions)}.{nameof(FineTuningOptions.KernelSourceDirectory)}" }
            : KernelSourceOptions.FromEnvironment()) with { Notice = options.Notice };

    // Without data, the embedded model trains on its own text (written beside the run), validated on the held-out part.
    private static (BatchLoader Loader, TrainingRows? Validation, string Summary) LoadData(FineTuningOptions options, Phi2Config config, TextTokenizer tokenizer)
    {
        string data;
        string? validation = options.ValidationPath;
        if (options.DataPath is not null) data = options.DataPath;
        else
        {
            data = EmbeddedDefault.WriteTrainingJsonl(Path.Combine(options.OutputDirectory, "embedded-train.jsonl"));
            validation ??= EmbeddedDefault.WriteValidationJsonl(Path.Combine(options.OutputDirectory, "embedded-validation.jsonl"));
            options.Notice?.Invoke($"no training data given: training on the embedded text ({EmbeddedDefault.TextSource.Split(';')[0]}), validating on its held-out chapters");
        }
        int? endOfText = tokenizer.EndOfTextId is { } eot && eot < config.VocabSize ? eot : null;
        var jsonl = new JsonlOptions { EndOfTextId = endOfText, SkipMalformedLines = options.SkipMalformedLines, Warn = options.Warn };
        var training = JsonlDataset.Load(data, tokenizer.Encode, jsonl);
        var validationSet = validation is null ? null : JsonlDataset.Load(validation, tokenizer.Encode, jsonl);
        var batching = new BatchingOptions
        {
            BatchSize = options.BatchSize, MaxLength = Math.Min(options.MaxLength, config.MaxPositionEmbeddings), Mode = options.Batching,
            PadId = endOfText ?? 0, Seed = (ulong)options.Training.Seed,
        };
        var loader = BatchLoader.Create(training, batching);
        var validationRows = validationSet is null ? null : TrainingRows.Create(validationSet, batching.MaxLength, options.Batching, batching.PadId);
        return (loader, validationRows, $"{loader.Rows.Summary}; {loader.BatchesPerEpoch} batches of {options.BatchSize} x {batching.MaxLength} per epoch");
    }

    private static LoraConfig DefaultLora() => TrainingSelection.Build(["q_proj", "v_proj"], [], layers: null);

    // New tokens' rows must learn: their embedding and their lm_head row train through LoRA unless they already train.
    private static LoraConfig WithNewTokenRows(LoraConfig config, TextTokenizer tokenizer, Action<string>? notice)
    {
        if (tokenizer.AddedTokens.Count == 0) return config;
        var targets = config.TargetModules.ToList();
        foreach (var module in new[] { "model.embed_tokens", "lm_head" })
            if (!targets.Contains(module) && !ModuleSelection.IsModuleToSave(config, module))
            {
                targets.Add(module);
                notice?.Invoke($"{module} trains with LoRA so the new tokens' rows learn");
            }
        return config with { TargetModules = targets };
    }
}
