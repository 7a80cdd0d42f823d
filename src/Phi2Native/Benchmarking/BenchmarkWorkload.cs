namespace Phi2Native.Benchmarking;

/// <summary>What one benchmark case times, one repetition each.</summary>
public enum BenchmarkWorkload
{
    /// <summary>A full training step: forward, causal-LM loss, backward, global-norm clipping and AdamW over every parameter; B x T tokens.</summary>
    Train,

    /// <summary>A LoRA step of a task preset over the frozen base: forward, loss, backward, clipping and AdamW over the adapters; B x T tokens.</summary>
    Lora,

    /// <summary>One new token per row through the KV cache after a prefill of T (untimed), logits of that token to the host; B tokens.</summary>
    Decode,

    /// <summary>A prompt of T tokens per row into an empty KV cache, logits of the last position to the host; B x T tokens.</summary>
    Prefill,
}

/// <summary>The workloads' command-line names.</summary>
public static class BenchmarkWorkloads
{
    /// <summary>"train, lora, decode, prefill".</summary>
    public const string Spellings = "train, lora, decode, prefill";

    /// <summary>The lower-case name (<c>train</c>, <c>lora</c>, <c>decode</c>, <c>prefill</c>), as the JSON's "what" says it.</summary>
    public static string Name(this BenchmarkWorkload workload) => workload switch
    {
        BenchmarkWorkload.Train => "train",
        BenchmarkWorkload.Lora => "lora",
        BenchmarkWorkload.Decode => "decode",
        BenchmarkWorkload.Prefill => "prefill",
        _ => throw new ArgumentOutOfRangeException(nameof(workload), workload, null),
    };

    /// <summary>The workload named <paramref name="name"/>.</summary>
    /// <exception cref="Phi2Exception">Not one of <see cref="Spellings"/>.</exception>
    public static BenchmarkWorkload Parse(string name) =>
        Enum.GetValues<BenchmarkWorkload>().FirstOrDefault(w => w.Name() == name.Trim().ToLowerInvariant(), (BenchmarkWorkload)(-1)) is var found && found >= 0
            ? found
            : throw new Phi2Exception($"workload \"{name}\" is not one of {Spellings}");
}
