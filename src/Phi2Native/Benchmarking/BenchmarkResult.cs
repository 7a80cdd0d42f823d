using System.Text.Json;
using System.Text.Json.Serialization;

namespace Phi2Native.Benchmarking;

/// <summary>
/// One benchmark case's result: what ran where, at which shape, its times, tokens/s and memory. <see cref="ToJson"/>
/// writes it as one JSON object whose field names are stable (README.md, "Benchmarks for harnesses: phi2 bench").
/// </summary>
public sealed record BenchmarkResult
{
    /// <summary>The JSON layout's version; raised only when a field changes meaning or goes away (new fields do not raise it).</summary>
    public const int SchemaVersion = 1;

    /// <summary>The workload.</summary>
    public required BenchmarkWorkload Workload { get; init; }

    /// <summary><c>cpu</c>, <c>cuda:N</c> or <c>emulated</c>.</summary>
    public required string Device { get; init; }

    /// <summary>The backend's one-line description ("cpu (16 threads), f32", "cuda:0 NVIDIA H100 ... (sm_90), bf16").</summary>
    public required string DeviceDescription { get; init; }

    /// <summary><c>f32</c> or <c>bf16</c>.</summary>
    public required string DType { get; init; }

    /// <summary><c>embedded</c> or <c>phi2</c> (random weights of that config), or the model folder's full path.</summary>
    public required string Model { get; init; }

    /// <summary>Decoder layers.</summary>
    public required int Layers { get; init; }

    /// <summary>C.</summary>
    public required int HiddenSize { get; init; }

    /// <summary>Every parameter of the model (the base; adapters not counted).</summary>
    public required long Parameters { get; init; }

    /// <summary>Parameters the step updates: all for train, the adapters' for lora, 0 for decode and prefill.</summary>
    public required long TrainableParameters { get; init; }

    /// <summary>B.</summary>
    public required int Batch { get; init; }

    /// <summary>T (for decode, the prefill length the timed tokens follow).</summary>
    public required int Sequence { get; init; }

    /// <summary>The LoRA preset of a lora case, else null.</summary>
    public string? Preset { get; init; }

    /// <summary>The LoRA rank of a lora case, else null.</summary>
    public int? LoraRank { get; init; }

    /// <summary>Untimed repetitions before the measured ones.</summary>
    public required int Warmup { get; init; }

    /// <summary>The measured repetitions and their summary.</summary>
    public required BenchmarkTimes Times { get; init; }

    /// <summary>Tokens one repetition processes: B x T, or B for decode.</summary>
    public required long TokensPerRepetition { get; init; }

    /// <summary>Tokens per second at the median time.</summary>
    public double TokensPerSecond => TokensPerRepetition / (Times.MedianMs / 1000);

    /// <summary>Bytes held by tensors when the measured repetitions began: weights, optimizer state, the KV cache.</summary>
    public required long ResidentBytes { get; init; }

    /// <summary>The peak of bytes held by tensors during the measured repetitions (resident bytes included).</summary>
    public required long PeakBytes { get; init; }

    /// <summary>Seconds spent building or loading the model and its optimizer, before the warm-up.</summary>
    public required double SetupSeconds { get; init; }

    /// <summary>
    /// The modelled time of one repetition on an H100 SXM, from the roofline model of issue 12 section 3 (the profiler,
    /// built beside this); null until that model fills it. A modelled figure, never a measurement.
    /// </summary>
    public double? ModelledH100Ms { get; init; }

    /// <summary>As <see cref="ModelledH100Ms"/>, for an H200.</summary>
    public double? ModelledH200Ms { get; init; }

    /// <summary>One JSON object on one line, with the stable field names.</summary>
    public string ToJson() => JsonSerializer.Serialize(new Json(this), s_json);

    private static readonly JsonSerializerOptions s_json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    // The JSON's fields, in order; the names are the README's (snake_case of these properties).
    private sealed class Json(BenchmarkResult r)
    {
        public int Schema => SchemaVersion;
        public string What => r.Workload.Name();
        public string Device => r.Device;
        public string DeviceDescription => r.DeviceDescription;
        public string Dtype => r.DType;
        public string Model => r.Model;
        public int Layers => r.Layers;
        public int HiddenSize => r.HiddenSize;
        public long Parameters => r.Parameters;
        public long TrainableParameters => r.TrainableParameters;
        public int Batch => r.Batch;
        public int Seq => r.Sequence;
        public string? Preset => r.Preset;
        public int? LoraR => r.LoraRank;
        public int Warmup => r.Warmup;
        public int Repeat => r.Times.Milliseconds.Count;
        public double MedianMs => r.Times.MedianMs;
        public double MeanMs => r.Times.MeanMs;
        public double MinMs => r.Times.MinMs;
        public double MaxMs => r.Times.MaxMs;
        public double MadMs => r.Times.MedianAbsoluteDeviationMs;
        public IReadOnlyList<double> TimesMs => r.Times.Milliseconds;
        public long TokensPerRep => r.TokensPerRepetition;
        public double TokensPerS => r.TokensPerSecond;
        public long ResidentBytes => r.ResidentBytes;
        public long PeakBytes => r.PeakBytes;
        public double SetupS => r.SetupSeconds;
        public double? ModelledH100Ms => r.ModelledH100Ms;
        public double? ModelledH200Ms => r.ModelledH200Ms;
    }
}
