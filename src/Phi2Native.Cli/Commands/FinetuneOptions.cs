using System.CommandLine;
using Phi2Native.FineTuning;
using Phi2Native.FineTuning.Data;
using Phi2Native.FineTuning.Lora;
using Phi2Native.FineTuning.Optim;
using Phi2Native.FineTuning.Selection;
using Phi2Native.FineTuning.Training;
using Phi2Native.Hosting;
using Phi2Native.Models.Phi2;

namespace Phi2Native.Cli.Commands;

/// <summary>The options of `phi2 finetune` (and `phi2 layers`, which shares the selection ones), parsed into library types.</summary>
internal sealed class FinetuneOptions
{
    public readonly Option<string?> Model = new("--model") { Description = "Model folder (default: the embedded tiny model)." };
    public readonly Option<string?> Data = new("--data") { Description = "Training data: JSONL with a \"text\" field, or \"prompt\" and \"completion\" (default with no --model: the embedded text)." };
    public readonly Option<string?> Validation = new("--val") { Description = "Validation data (same format), reported as loss and perplexity." };
    public readonly Option<string> Out = new("--out") { Description = "Output folder: adapter, checkpoints/, metrics.jsonl, loss.png.", Required = true };
    public readonly Option<string?> Resume = new("--resume") { Description = "Continue from a checkpoint folder (checkpoints/step-N) with the same other options; from --out's own checkpoints the run keeps one history (metrics.jsonl cut back to step N, later checkpoints moved to checkpoints/abandoned-<time>/)." };
    public readonly SelectionOptions Selection = new();
    public readonly Option<double> LearningRate = new("--lr") { Description = "Peak learning rate.", DefaultValueFactory = _ => 2e-4 };
    public readonly Option<int> Epochs = new("--epochs") { Description = "Passes over the data.", DefaultValueFactory = _ => 1 };
    public readonly Option<int?> MaxSteps = new("--max-steps") { Description = "Stop after this many optimizer steps." };
    public readonly Option<int> BatchSize = new("--batch-size") { Description = "Sequences per micro-batch (B).", DefaultValueFactory = _ => 4 };
    public readonly Option<int> MaxLength = new("--max-length") { Description = "Tokens per sequence (T).", DefaultValueFactory = _ => 256 };
    public readonly Option<int> GradientAccumulation = new("--grad-accum") { Description = "Micro-batches per optimizer step.", DefaultValueFactory = _ => 1 };
    public readonly Option<int> Warmup = new("--warmup") { Description = "Warmup steps.", DefaultValueFactory = _ => 0 };
    public readonly Option<string> Schedule = new("--schedule") { Description = "Decay after warmup: cosine, linear or constant.", DefaultValueFactory = _ => "cosine" };
    public readonly Option<double> WeightDecay = new("--weight-decay") { Description = "AdamW's decoupled weight decay.", DefaultValueFactory = _ => 0 };
    public readonly Option<double> MaxGradNorm = new("--max-grad-norm") { Description = "Clip gradients to this global norm (0: off).", DefaultValueFactory = _ => 1 };
    public readonly Option<double?> ResidualDropout = new("--resid-dropout") { Description = "Override the config's resid_pdrop while training." };
    public readonly Option<int> Seed = new("--seed") { Description = "Seed of data order, adapter init and dropout, a whole number from 0 (runs repeat bit for bit).", DefaultValueFactory = _ => 42 };
    public readonly Option<bool> Padding = new("--padding") { Description = "One example per row, padded (default: pack examples into full rows)." };
    public readonly Option<bool> SkipBadLines = new("--skip-bad-lines") { Description = "Skip malformed JSONL lines (each reported) instead of stopping." };
    public readonly Option<string?> NewTokens = new("--new-tokens") { Description = "New words, comma-separated: they take unused embedding rows, and embed_tokens and lm_head then train." };
    public readonly Option<int> EvalEvery = new("--eval-every") { Description = "Validate every N steps (0: each epoch).", DefaultValueFactory = _ => 0 };
    public readonly Option<int> SaveEvery = new("--save-every") { Description = "Checkpoint every N steps (0: at the end).", DefaultValueFactory = _ => 0 };
    public readonly Option<double> SaveEveryMinutes = new("--save-every-minutes")
    {
        Description = "Also checkpoint when this many minutes have passed since the last checkpoint (0: off), for machines that may be taken away.", DefaultValueFactory = _ => 0,
    };
    public readonly Option<int?> KeepCheckpoints = new("--keep-checkpoints") { Description = "Keep only the newest K step checkpoints (default: all)." };
    public readonly Option<int> SkipNonFinite = new("--skip-nonfinite")
    {
        Description = "Skip at most N steps whose loss or gradient is not finite (each updates nothing, with a warning) instead of stopping with exit code 3 (default 0).",
        DefaultValueFactory = _ => 0,
    };
    public readonly Option<int> MetricsEvery = new("--metrics-every")
    {
        Description = "Read the steps' losses and checks from the device once every N steps, one wait per N steps; the run is the same bit for bit (default 1).",
        DefaultValueFactory = _ => 1,
    };
    public readonly Option<bool> Overwrite = new("--overwrite") { Description = "Start a new run in an --out that holds another run's checkpoints, clearing them, its metrics and adapter first." };
    public readonly DeviceOptions Device = new(
        "Compute dtype of the base: f32, or bf16 on the CUDA backend (the LoRA adapters and AdamW state stay fp32; --full modules need f32).");

    public IEnumerable<Option> All =>
        [Model, Data, Validation, Out, Resume, .. Selection.All, LearningRate, Epochs, MaxSteps, BatchSize, MaxLength, GradientAccumulation,
         Warmup, Schedule, WeightDecay, MaxGradNorm, ResidualDropout, Seed, Padding, SkipBadLines, NewTokens, EvalEvery, SaveEvery, SaveEveryMinutes,
         KeepCheckpoints, SkipNonFinite, MetricsEvery, Overwrite, .. Device.All];

    /// <summary>What the command line said, checked, as the library's run options (the backend is the command's to open).</summary>
    public sealed record Values(FineTuningOptions Run, DeviceRequest Device);

    public Values Read(ParseResult result)
    {
        var decay = result.GetValue(Schedule) switch
        {
            "cosine" => LearningRateDecay.Cosine,
            "linear" => LearningRateDecay.Linear,
            "constant" => LearningRateDecay.Constant,
            var other => throw new Phi2Exception($"--schedule \"{other}\" is not one of cosine, linear, constant"),
        };
        var training = new TrainingOptions
        {
            Epochs = result.GetValue(Epochs), MaxSteps = result.GetValue(MaxSteps), GradientAccumulation = result.GetValue(GradientAccumulation),
            LearningRate = result.GetValue(LearningRate), WeightDecay = result.GetValue(WeightDecay), WarmupSteps = result.GetValue(Warmup),
            Decay = decay, MaxGradientNorm = result.GetValue(MaxGradNorm), ResidualDropout = result.GetValue(ResidualDropout),
            Seed = result.GetValue(Seed), EvaluateEvery = result.GetValue(EvalEvery), SaveEvery = result.GetValue(SaveEvery),
            SaveEveryMinutes = result.GetValue(SaveEveryMinutes), KeepCheckpoints = result.GetValue(KeepCheckpoints), SkipNonFiniteSteps = result.GetValue(SkipNonFinite),
            MetricsEvery = result.GetValue(MetricsEvery),
        };
        // Checked now, before any folder is made or model loads (the run checks them again).
        training.Validate();
        var run = new FineTuningOptions
        {
            ModelDirectory = result.GetValue(Model), DataPath = result.GetValue(Data), ValidationPath = result.GetValue(Validation),
            OutputDirectory = result.GetValue(Out)!, ResumeFrom = result.GetValue(Resume), Overwrite = result.GetValue(Overwrite), Lora = Selection.Reader(result),
            NewTokens = result.GetValue(NewTokens)?.Split(',', StringSplitOptions.RemoveEmptyEntries) ?? [], Training = training,
            BatchSize = result.GetValue(BatchSize), MaxLength = result.GetValue(MaxLength),
            Batching = result.GetValue(Padding) ? BatchingMode.Padding : BatchingMode.Packing, SkipMalformedLines = result.GetValue(SkipBadLines),
        };
        if (File.Exists(run.OutputDirectory)) throw new Phi2Exception($"--out '{run.OutputDirectory}' is a file; expected a folder (created if missing)");
        if (run.BatchSize <= 0) throw new Phi2Exception($"--batch-size must be positive, got {run.BatchSize}");
        if (run.MaxLength < 2) throw new Phi2Exception($"--max-length must be at least 2, got {run.MaxLength}");
        return new Values(run, Device.Read(result));
    }
}

/// <summary>What to train: a preset, LoRA targets, modules trained in full, layers, and the LoRA hyper-parameters.</summary>
internal sealed class SelectionOptions
{
    public readonly Option<string?> Preset = new("--preset") { Description = $"A task preset: {string.Join(", ", TaskPreset.All.Select(p => p.Name))}." };
    public readonly Option<string?> Target = new("--target") { Description = "LoRA targets, e.g. q_proj,v_proj,fc1 (attention = q,k,v,dense; mlp = fc1,fc2); overrides the preset's." };
    public readonly Option<string?> Full = new("--full") { Description = "Modules trained in full, e.g. lm_head,embed_tokens, or attention,mlp with --layers." };
    public readonly Option<string?> Layers = new("--layers") { Description = "Decoder layers that train, e.g. 0,2,24-31 (embed_tokens and lm_head follow --target/--full alone)." };
    public readonly Option<int> Rank = new("--r") { Description = "LoRA rank.", DefaultValueFactory = _ => 8 };
    public readonly Option<double> Alpha = new("--alpha") { Description = "LoRA alpha (scaling alpha / r).", DefaultValueFactory = _ => 16 };
    public readonly Option<double> Dropout = new("--dropout") { Description = "LoRA dropout.", DefaultValueFactory = _ => 0.05 };
    public readonly Option<bool> RsLora = new("--rslora") { Description = "Scale by alpha / sqrt(r) (rsLoRA)." };

    public IEnumerable<Option> All => [Preset, Target, Full, Layers, Rank, Alpha, Dropout, RsLora];

    /// <summary>Reads the options now; the LoRA config is built once the model's layer count is known.</summary>
    public Func<Phi2Config, LoraConfig> Reader(ParseResult result)
    {
        string? preset = result.GetValue(Preset), target = result.GetValue(Target), full = result.GetValue(Full), layers = result.GetValue(Layers);
        int rank = result.GetValue(Rank);
        double alpha = result.GetValue(Alpha), dropout = result.GetValue(Dropout);
        bool rsLora = result.GetValue(RsLora);
        // Checked now, before a model loads; written so that NaN fails (it is refused while parsing anyway).
        if (rank <= 0) throw new Phi2Exception($"--r must be a positive whole number (the LoRA rank), got {rank}");
        if (!(dropout is >= 0 and < 1)) throw new Phi2Exception($"--dropout must be in [0, 1) (the LoRA dropout probability), got {dropout}");
        static string[] List(string? text) => text?.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries) ?? [];
        var presetModules = preset is null ? null : TaskPreset.Get(preset).Modules;
        return config =>
        {
            var targets = target is not null ? List(target) : presetModules?.ToArray() ?? (full is null ? ["q_proj", "v_proj"] : []);
            return TrainingSelection.Build(targets, List(full), layers is null ? null : TrainingSelection.ParseLayers(layers, config.NumHiddenLayers),
                rank, alpha, dropout, rsLora);
        };
    }
}
