namespace Phi2Native.Text;

/// <summary>What <see cref="Generator"/> does with a prompt: how many tokens at most, how it chooses them, when it stops.</summary>
public sealed record GenerationOptions
{
    /// <summary>New tokens at most (&gt;= 0). Default 64.</summary>
    public int MaxNewTokens { get; init; } = 64;

    /// <summary>How each token is chosen. Default: <see cref="SamplingOptions.Greedy"/>.</summary>
    public SamplingOptions Sampling { get; init; } = SamplingOptions.Greedy;

    /// <summary>Stop once the config's eos_token_id is generated (it is still emitted, as HF <c>generate</c> returns it). Default true.</summary>
    public bool StopAtEndOfText { get; init; } = true;

    /// <summary>Stop once the text generated so far contains one of these (the token that completes it is still
    /// emitted; callers trim the text). Needs a tokenizer. Default none.</summary>
    public IReadOnlyList<string> StopStrings { get; init; } = [];

    /// <summary>
    /// On the CUDA backend, capture a decode step once as a CUDA graph and replay it for each token (one graph launch
    /// and one host read per token; see DecodeGraph); false runs every step's kernels one by one, as the CPU backend
    /// always does. The tokens are the same either way. Default true.
    /// </summary>
    public bool CudaGraphs { get; init; } = true;

    /// <summary>Checks the options.</summary>
    /// <exception cref="Phi2Exception">A negative token count, an empty stop string, or invalid sampling options; the message names the option.</exception>
    public void Validate()
    {
        if (MaxNewTokens < 0) throw new Phi2Exception($"max-tokens must be >= 0, got {MaxNewTokens}");
        ArgumentNullException.ThrowIfNull(Sampling);
        Sampling.Validate();
        if (StopStrings.Any(string.IsNullOrEmpty)) throw new Phi2Exception("a stop string must not be empty");
    }
}

/// <summary>Why generation ended.</summary>
public enum StopReason
{
    /// <summary><see cref="GenerationOptions.MaxNewTokens"/> tokens were generated.</summary>
    MaxTokens,
    /// <summary>The eos token was generated.</summary>
    EndOfText,
    /// <summary>The generated text contains a stop string.</summary>
    StopString,
    /// <summary>The sequence reached max_position_embeddings before max tokens.</summary>
    ContextFull,
}

/// <summary>The tokens generated for one prompt and why generation stopped.</summary>
/// <param name="Tokens">The new token ids, the eos or stop-string token included.</param>
/// <param name="StopReason">Why it stopped.</param>
public sealed record GenerationResult(IReadOnlyList<int> Tokens, StopReason StopReason);
