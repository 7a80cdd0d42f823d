using System.Text;
using System.Text.Json;

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
    /// The modelled time of one repetition on an H100 SXM by the profiler's roofline model (<see cref="Profiling.RooflineModel"/>),
    /// from the first warm-up repetition's recorded launches; null on the CPU backend (its ops declare no GPU costs) and
    /// with no warm-up. A modelled figure, never a measurement.
    /// </summary>
    public double? ModelledH100Ms { get; init; }

    /// <summary>As <see cref="ModelledH100Ms"/>, for an H200.</summary>
    public double? ModelledH200Ms { get; init; }

    /// <summary>One JSON object on one line, with the stable field names, in the README's order.</summary>
    public string ToJson()
    {
        // Written field by field: trim-safe (the GPU runner, which is trimmed, links this library) and the order is the README's.
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteNumber("schema", SchemaVersion);
            json.WriteString("what", Workload.Name());
            json.WriteString("device", Device);
            json.WriteString("device_description", DeviceDescription);
            json.WriteString("dtype", DType);
            json.WriteString("model", Model);
            json.WriteNumber("layers", Layers);
            json.WriteNumber("hidden_size", HiddenSize);
            json.WriteNumber("parameters", Parameters);
            json.WriteNumber("trainable_parameters", TrainableParameters);
            json.WriteNumber("batch", Batch);
            json.WriteNumber("seq", Sequence);
            if (Preset is null) json.WriteNull("preset");
            else json.WriteString("preset", Preset);
            Number(json, "lora_r", LoraRank);
            json.WriteNumber("warmup", Warmup);
            json.WriteNumber("repeat", Times.Milliseconds.Count);
            Number(json, "median_ms", Times.MedianMs);
            Number(json, "mean_ms", Times.MeanMs);
            Number(json, "min_ms", Times.MinMs);
            Number(json, "max_ms", Times.MaxMs);
            Number(json, "mad_ms", Times.MedianAbsoluteDeviationMs);
            json.WriteStartArray("times_ms");
            foreach (double ms in Times.Milliseconds) json.WriteNumberValue(ms);
            json.WriteEndArray();
            json.WriteNumber("tokens_per_rep", TokensPerRepetition);
            Number(json, "tokens_per_s", TokensPerSecond);
            json.WriteNumber("resident_bytes", ResidentBytes);
            json.WriteNumber("peak_bytes", PeakBytes);
            Number(json, "setup_s", SetupSeconds);
            Number(json, "modelled_h100_ms", ModelledH100Ms);
            Number(json, "modelled_h200_ms", ModelledH200Ms);
            json.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    /// <summary>A finite number, else null (JSON has no NaN or infinity; a zero-time repetition gives an infinite rate).</summary>
    private static void Number(Utf8JsonWriter json, string name, double? value)
    {
        if (value is { } v && double.IsFinite(v)) json.WriteNumber(name, v);
        else json.WriteNull(name);
    }
}
