using Phi2Native.Embedded;
using Phi2Native.FineTuning.Selection;
using Phi2Native.Hosting;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;

namespace Phi2Native.Benchmarking;

/// <summary>
/// One benchmark case: what to time, on which device, on which model and at which shape, how often. The names in
/// messages are the command line's (<c>phi2 bench</c>), since a host sets the same values.
/// </summary>
public sealed record BenchmarkOptions
{
    /// <summary>The config names <see cref="Config"/> takes.</summary>
    public const string ConfigSpellings = "embedded, phi2";

    /// <summary>The LoRA preset when none is given: q, k, v, dense, fc1, fc2 (what the GPU peers' PEFT step adapts).</summary>
    public const string DefaultPreset = "update-knowledge";

    /// <summary>What one repetition is.</summary>
    public BenchmarkWorkload Workload { get; init; }

    /// <summary>Where to compute (default the CPU), when <see cref="Benchmark.Run(BenchmarkOptions, IProgress{double}?, Action{string}?, CancellationToken)"/> opens the backend.</summary>
    public DeviceChoice Device { get; init; } = DeviceChoice.Cpu;

    /// <summary>The compute dtype of weights and activations (bf16: the CUDA backend only; a LoRA adapter stays fp32), when the backend is opened from these options.</summary>
    public DType DType { get; init; } = DType.F32;

    /// <summary>A model folder whose weights are loaded; null builds random weights of <see cref="Config"/>.</summary>
    public string? ModelDirectory { get; init; }

    /// <summary>
    /// Without <see cref="ModelDirectory"/>: <c>embedded</c> (the embedded stand-in's config, the default) or <c>phi2</c>
    /// (microsoft/phi-2's), with random weights (timings do not depend on the values).
    /// </summary>
    public string? Config { get; init; }

    /// <summary>Decoder layers of a <see cref="Config"/> model (default: the config's own); Phi-2's widths at 2 layers fit a small machine.</summary>
    public int? Layers { get; init; }

    /// <summary>B: rows per step.</summary>
    public int Batch { get; init; } = 1;

    /// <summary>T: tokens per row (for decode, the prefill the timed tokens follow).</summary>
    public int Sequence { get; init; } = 128;

    /// <summary>The LoRA task preset (<see cref="TaskPreset"/>); lora only; null: <see cref="DefaultPreset"/>.</summary>
    public string? Preset { get; init; }

    /// <summary>LoRA rank (alpha is twice it); lora only.</summary>
    public int LoraRank { get; init; } = 16;

    /// <summary>Measured repetitions; the median is the headline.</summary>
    public int Repeat { get; init; } = 5;

    /// <summary>Untimed repetitions first (JIT, kernel compilation, the allocator's cache).</summary>
    public int Warmup { get; init; } = 1;

    /// <summary>Seeds the random weights and tokens.</summary>
    public int Seed { get; init; }

    /// <summary>The model's config: the folder's config.json or the named one, cut to <see cref="Layers"/>.</summary>
    /// <exception cref="Phi2Exception">A value is out of range or the combination is refused; the message names the option.</exception>
    public Phi2Config ResolveConfig(Action<string>? warn = null)
    {
        Validate();
        Phi2Config config;
        if (ModelDirectory is not null) config = ModelSource.LoadConfig(ModelDirectory, warn);
        else
        {
            config = ConfigName() == "phi2" ? Phi2Config.Phi2 : EmbeddedDefault.Config;
            if (Layers is { } layers)
            {
                config = config with { NumHiddenLayers = layers };
                try
                {
                    config.Validate();
                }
                catch (ModelConfigException e)
                {
                    throw new Phi2Exception($"--layers {layers}: {e.Message}", e);
                }
            }
        }
        int positions = Workload == BenchmarkWorkload.Decode ? Sequence + Warmup + Repeat : Sequence;
        if (positions > config.MaxPositionEmbeddings)
            throw new Phi2Exception(Workload == BenchmarkWorkload.Decode
                ? $"--seq {Sequence} + --warmup {Warmup} + --repeat {Repeat} decoded positions exceed the model's {config.MaxPositionEmbeddings} (max_position_embeddings)"
                : $"--seq {Sequence} exceeds the model's {config.MaxPositionEmbeddings} positions (max_position_embeddings)");
        return config;
    }

    /// <summary>What the results call the model: <c>embedded</c> or <c>phi2</c>, or the model folder's full path.</summary>
    public string ModelName() => ModelDirectory is { } folder ? Path.GetFullPath(folder) : ConfigName();

    private string ConfigName() => (Config ?? "embedded").Trim().ToLowerInvariant() switch
    {
        "embedded" => "embedded",
        "phi2" or "phi-2" => "phi2",
        _ => throw new Phi2Exception($"--config \"{Config}\" is not one of {ConfigSpellings}"),
    };

    /// <summary>The LoRA preset a lora case trains.</summary>
    public TaskPreset ResolvePreset() => TaskPreset.Get(Preset ?? DefaultPreset);

    /// <summary>Refuses values out of range and combinations that mean nothing, naming the option.</summary>
    /// <exception cref="Phi2Exception">What is wrong, in the command line's names.</exception>
    public void Validate()
    {
        if (!Enum.IsDefined(Workload)) throw new Phi2Exception($"the workload must be one of {BenchmarkWorkloads.Spellings}");
        if (Batch < 1) throw new Phi2Exception($"--batch must be at least 1, got {Batch}");
        int minimum = Workload is BenchmarkWorkload.Train or BenchmarkWorkload.Lora ? 2 : 1;
        if (Sequence < minimum)
            throw new Phi2Exception($"--seq must be at least {minimum} for {Workload.Name()}{(minimum == 2 ? " (the loss predicts each next token)" : "")}, got {Sequence}");
        if (Repeat < 1) throw new Phi2Exception($"--repeat must be at least 1, got {Repeat}");
        if (Warmup < 0) throw new Phi2Exception($"--warmup must be at least 0, got {Warmup}");
        if (LoraRank < 1) throw new Phi2Exception($"the LoRA rank must be at least 1, got {LoraRank}");
        if (ModelDirectory is not null && Config is not null) throw new Phi2Exception("--model and --config exclude each other: a folder's weights, or random weights of a named config");
        if (ModelDirectory is not null && Layers is not null) throw new Phi2Exception("--layers applies to --config only: a model folder is loaded whole");
        if (Layers is < 1) throw new Phi2Exception($"--layers must be at least 1, got {Layers}");
        if (Preset is not null && Workload != BenchmarkWorkload.Lora) throw new Phi2Exception($"--preset applies to lora only, not {Workload.Name()}");
        if (Workload == BenchmarkWorkload.Lora) ResolvePreset();
        if (ModelDirectory is null) ConfigName();
    }
}
