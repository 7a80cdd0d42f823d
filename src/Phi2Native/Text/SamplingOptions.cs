namespace Phi2Native.Text;

/// <summary>
/// How the next token is chosen from a row of logits, with HF <c>generate</c>'s meanings and order: temperature,
/// then top-k, then top-p. Temperature 0 is greedy decoding (argmax, the lowest id on ties), whatever the other options.
/// </summary>
public sealed record SamplingOptions
{
    /// <summary>Divides the logits before the softmax: below 1 sharpens, above 1 flattens; 0 means greedy argmax. Default 1.</summary>
    public double Temperature { get; init; } = 1.0;

    /// <summary>Keeps only the k most likely tokens (ties broken by the lower id); 0 (the default) keeps all.</summary>
    public int TopK { get; init; }

    /// <summary>Nucleus sampling: keeps the smallest set of most likely tokens whose probability sums to at least p
    /// (always at least one token), in (0, 1]; 1 (the default) keeps all.</summary>
    public double TopP { get; init; } = 1.0;

    /// <summary>Seed of the random draws: the same seed, options and logits give the same tokens on every machine.
    /// Null draws a fresh seed for each <see cref="Sampler"/>.</summary>
    public ulong? Seed { get; init; }

    /// <summary>Greedy decoding (temperature 0).</summary>
    public static SamplingOptions Greedy { get; } = new() { Temperature = 0 };

    /// <summary>True when the choice is the argmax (temperature 0): no randomness is used.</summary>
    public bool IsGreedy => Temperature == 0;

    /// <summary>Checks the options.</summary>
    /// <exception cref="Phi2Exception">The temperature is negative or not finite, top-k is negative, or top-p is outside (0, 1] (NaN fails every check); the message names the option.</exception>
    public void Validate()
    {
        if (!NumberChecks.IsFiniteNonNegative(Temperature))
            throw new Phi2Exception($"temperature must be a finite number >= 0 (0 means greedy), got {Temperature}");
        if (TopK < 0)
            throw new Phi2Exception($"top-k must be >= 0 (0 keeps every token), got {TopK}");
        if (!(TopP > 0 && TopP <= 1))
            throw new Phi2Exception($"top-p must be in (0, 1] (1 keeps every token), got {TopP}");
    }
}
