using Phi2Native.FineTuning.Data;
using Phi2Native.FineTuning.Lora;
using Phi2Native.FineTuning.Training;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;

namespace Phi2Native.Hosting;

/// <summary>What a <see cref="FineTuningRun"/> trains, on what data, where it computes and where it writes: what <c>phi2 finetune</c>'s options say.</summary>
/// <example><code>
/// var options = new FineTuningOptions
/// {
///     ModelDirectory = "/models/phi-2", DataPath = "train.jsonl", ValidationPath = "val.jsonl", OutputDirectory = "run",
///     Lora = config => TrainingSelection.Build(["q_proj", "v_proj"], [], layers: null, r: 16, alpha: 32),
///     Training = new TrainingOptions { LearningRate = 2e-4, MaxSteps = 200, SaveEveryMinutes = 10 },
/// };
/// </code></example>
public sealed record FineTuningOptions
{
    /// <summary>The base model folder; null for the embedded tiny model.</summary>
    public string? ModelDirectory { get; init; }

    /// <summary>
    /// Training data: JSONL with a "text" field, or "prompt" and "completion" (loss on the completion only). Null with
    /// the embedded model trains on its own text (written into the output folder) and validates on its held-out chapters.
    /// </summary>
    public string? DataPath { get; init; }

    /// <summary>Validation data in the same format, reported as loss and perplexity; null for none (or the embedded text's held-out part).</summary>
    public string? ValidationPath { get; init; }

    /// <summary>
    /// The run's folder: the adapter at its top, checkpoints/step-N/, metrics.jsonl. One run at a time holds it (an OS
    /// lock, released when the process ends however it ends); a new run into a folder with checkpoints needs
    /// <see cref="Overwrite"/> or <see cref="ResumeFrom"/>.
    /// </summary>
    public required string OutputDirectory { get; init; }

    /// <summary>
    /// A checkpoint folder (checkpoints/step-N) to continue from, with the same other options. From the output folder's
    /// own checkpoints/, the run keeps one history: metrics.jsonl is cut back to step N and later checkpoints move to
    /// checkpoints/abandoned-&lt;time&gt;/.
    /// </summary>
    public string? ResumeFrom { get; init; }

    /// <summary>Clear another run's checkpoints, metrics and adapter from <see cref="OutputDirectory"/> before a new run (never with <see cref="ResumeFrom"/> into the same folder).</summary>
    public bool Overwrite { get; init; }

    /// <summary>
    /// What trains, given the model's config once it is read (e.g. <c>TrainingSelection.Build(...)</c>); null: LoRA r 8,
    /// alpha 16, dropout 0.05 on q_proj and v_proj of every layer. Ignored when resuming (the checkpoint's adapter says).
    /// </summary>
    public Func<Phi2Config, LoraConfig>? Lora { get; init; }

    /// <summary>New words: they take unused embedding rows, and embed_tokens and lm_head then train through LoRA.</summary>
    public IReadOnlyList<string> NewTokens { get; init; } = [];

    /// <summary>How to train: optimizer, schedule, steps, validation and checkpoint cadence, the non-finite policy.</summary>
    public TrainingOptions Training { get; init; } = new();

    /// <summary>Sequences per micro-batch (B).</summary>
    public int BatchSize { get; init; } = 4;

    /// <summary>Tokens per sequence (T), at most the model's context.</summary>
    public int MaxLength { get; init; } = 256;

    /// <summary>Pack examples into full rows (default) or pad one example per row.</summary>
    public BatchingMode Batching { get; init; } = BatchingMode.Packing;

    /// <summary>Skip malformed JSONL lines (each said through <see cref="Warn"/>) instead of stopping.</summary>
    public bool SkipMalformedLines { get; init; }

    /// <summary>Where to compute when <see cref="Backend"/> is null (the run opens it and disposes it with itself).</summary>
    public DeviceChoice Device { get; init; } = DeviceChoice.Cpu;

    /// <summary>A backend of the host's own (not disposed by the run), instead of opening <see cref="Device"/>.</summary>
    public IBackend? Backend { get; init; }

    /// <summary>The base's compute dtype: F32, or BF16 on the CUDA backend (adapters, gradients and AdamW state stay fp32).</summary>
    public DType DType { get; init; } = DType.F32;

    /// <summary>A folder of kernel sources the CUDA backend takes instead of the embedded ones (see <see cref="Phi2EngineOptions.KernelSourceDirectory"/>); null reads <c>PHI2NATIVE_KERNEL_SOURCES</c>.</summary>
    public string? KernelSourceDirectory { get; init; }

    /// <summary>Receives warnings (skipped lines, tokenizer fallbacks, a checkpoint without a manifest).</summary>
    public Action<string>? Warn { get; init; }

    /// <summary>Receives remarks on what the run does on its own (the embedded text used as data, a module that trains so new tokens learn, leftovers of a killed write removed).</summary>
    public Action<string>? Notice { get; init; }

    /// <summary>Receives the fraction of the base model loaded, from 0 to 1.</summary>
    public IProgress<double>? LoadProgress { get; init; }

    /// <summary>
    /// Checks the options without touching the disk beyond looking (what <see cref="FineTuningRun.Open"/> does first):
    /// every value in range (NaN and infinities fail every check), the output not a file, --resume a checkpoint folder,
    /// data given for a model folder, and the device able to train in the dtype. Messages name the command line's options.
    /// </summary>
    /// <exception cref="Phi2Exception">A value is refused; the message says which and what it must be.</exception>
    public void Validate()
    {
        ArgumentNullException.ThrowIfNull(OutputDirectory, nameof(OutputDirectory));
        ArgumentNullException.ThrowIfNull(Training, nameof(Training));
        ArgumentNullException.ThrowIfNull(Device, nameof(Device));
        Training.Validate();
        if (BatchSize <= 0) throw new Phi2Exception($"--batch-size must be positive, got {BatchSize}");
        if (MaxLength < 2) throw new Phi2Exception($"--max-length must be at least 2, got {MaxLength}");
        if (File.Exists(OutputDirectory)) throw new Phi2Exception($"--out '{OutputDirectory}' is a file; expected a folder (created if missing)");
        if (DataPath is null && ModelDirectory is not null)
            throw new Phi2Exception("--data is required with --model: give a JSONL file of {\"text\": ...} or {\"prompt\": ..., \"completion\": ...} lines");
        if (ResumeFrom is { } resume && !TrainingCheckpoint.IsCheckpoint(resume))
            throw new Phi2Exception(IO.PathChecks.FolderProblem(resume) is { } problem
                ? $"--resume '{resume}' {problem}; pass a checkpoint folder (checkpoints/step-N)"
                : $"'{resume}' is not a training checkpoint: it needs {TrainingCheckpoint.StateFileName} and {TrainingCheckpoint.OptimizerFileName} (an adapter folder alone cannot resume a run)");
        // Refused before the folder is made or anything is read.
        var device = Backend is null ? Device : DeviceChoice.Of(Backend.Device);
        ComputeBackend.Check(device, DType, ComputeUse.Training);
    }
}
