using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;

namespace Phi2Native.Text;

/// <summary>
/// Autoregressive generation with a KV cache: the prompt is prefilled in one forward, then each step samples a
/// token from the last logits row and runs that token alone (one query position) against the cached keys and values.
/// </summary>
/// <remarks>
/// Tokens are exposed one by one as they are chosen (<see cref="Stream"/>), or collected (<see cref="Generate(IReadOnlyList{int}, GenerationOptions, Action{int}?, CancellationToken)"/>).
/// A batch of prompts of different lengths (<see cref="GenerateBatch"/>) runs row by row, each with its own cache of
/// batch 1: no padding, masks or per-row positions are needed, and every row gives exactly the tokens it gives alone.
/// The model must be in evaluation mode with no gradient tape recording.
/// </remarks>
public sealed class Generator
{
    /// <summary>A generator over <paramref name="model"/>; <paramref name="tokenizer"/> (optional) enables stop strings and text prompts.</summary>
    public Generator(Phi2Model model, TextTokenizer? tokenizer = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        Model = model;
        Tokenizer = tokenizer;
    }

    /// <summary>The model that computes the logits.</summary>
    public Phi2Model Model { get; }

    /// <summary>The tokenizer, or null (then only ids go in and out, and stop strings are unavailable).</summary>
    public TextTokenizer? Tokenizer { get; }

    /// <summary>
    /// The new tokens for <paramref name="promptIds"/>, each yielded as soon as it is chosen. Stops after an eos token
    /// (when <see cref="GenerationOptions.StopAtEndOfText"/>), after the token that completes a stop string, after
    /// <see cref="GenerationOptions.MaxNewTokens"/> tokens, or when the sequence fills max_position_embeddings.
    /// Nothing runs until the enumeration starts; the cache is freed when it ends or is disposed.
    /// </summary>
    /// <exception cref="ModelInputException">The prompt is empty, longer than max_position_embeddings, or holds an id outside the vocabulary.</exception>
    /// <exception cref="Phi2Exception">Invalid options, or stop strings without a tokenizer.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked before each forward).</exception>
    public IEnumerable<int> Stream(IReadOnlyList<int> promptIds, GenerationOptions options, CancellationToken cancellationToken = default)
    {
        Check(promptIds, options);
        return Run(promptIds, options, new Outcome(), cancellationToken);
    }

    /// <summary>Generates for <paramref name="promptIds"/> as <see cref="Stream"/> does, calling <paramref name="onToken"/> with each new id as it comes.</summary>
    /// <exception cref="ModelInputException">The prompt is empty, longer than max_position_embeddings, or holds an id outside the vocabulary.</exception>
    /// <exception cref="Phi2Exception">Invalid options, or stop strings without a tokenizer.</exception>
    /// <exception cref="OperationCanceledException">Cancelled.</exception>
    public GenerationResult Generate(IReadOnlyList<int> promptIds, GenerationOptions options, Action<int>? onToken = null,
        CancellationToken cancellationToken = default)
    {
        Check(promptIds, options);
        var outcome = new Outcome();
        var tokens = new List<int>();
        foreach (int token in Run(promptIds, options, outcome, cancellationToken))
        {
            tokens.Add(token);
            onToken?.Invoke(token);
        }
        return new GenerationResult(tokens, outcome.Reason);
    }

    /// <summary>Encodes <paramref name="prompt"/> with the tokenizer and generates from it.</summary>
    /// <exception cref="Phi2Exception">No tokenizer was given, or as the id overload.</exception>
    public GenerationResult Generate(string prompt, GenerationOptions options, Action<int>? onToken = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        var tokenizer = Tokenizer ?? throw new Phi2Exception("a text prompt needs a tokenizer; pass one to the Generator or give the prompt as ids");
        return Generate(tokenizer.Encode(prompt), options, onToken, cancellationToken);
    }

    /// <summary>
    /// Generates for each prompt of a batch (lengths may differ), row after row, each exactly as it would be alone;
    /// with a seed s, row r samples with seed s + r so rows differ yet repeat. <paramref name="onToken"/> gets (row, id).
    /// </summary>
    /// <exception cref="ModelInputException">A prompt is empty, too long or holds an id outside the vocabulary (all are checked before any runs).</exception>
    /// <exception cref="Phi2Exception">Invalid options, or stop strings without a tokenizer.</exception>
    /// <exception cref="OperationCanceledException">Cancelled.</exception>
    public IReadOnlyList<GenerationResult> GenerateBatch(IReadOnlyList<IReadOnlyList<int>> prompts, GenerationOptions options,
        Action<int, int>? onToken = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(prompts);
        if (prompts.Count == 0) throw new ModelInputException("a batch needs at least one prompt");
        foreach (var prompt in prompts) Check(prompt, options);
        var results = new List<GenerationResult>(prompts.Count);
        for (int row = 0; row < prompts.Count; row++)
        {
            var rowOptions = options.Sampling.Seed is ulong seed
                ? options with { Sampling = options.Sampling with { Seed = unchecked(seed + (ulong)row) } }
                : options;
            int current = row;
            results.Add(Generate(prompts[row], rowOptions, onToken is null ? null : id => onToken(current, id), cancellationToken));
        }
        return results;
    }

    private void Check(IReadOnlyList<int> promptIds, GenerationOptions options)
    {
        ArgumentNullException.ThrowIfNull(promptIds);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (options.StopStrings.Count > 0 && Tokenizer is null)
            throw new Phi2Exception("stop strings need a tokenizer to decode the generated text; pass one to the Generator");
        var config = Model.Config;
        if (promptIds.Count == 0) throw new ModelInputException("the prompt is empty: give at least one token");
        if (promptIds.Count > config.MaxPositionEmbeddings)
            throw new ModelInputException(
                $"the prompt has {promptIds.Count} tokens, more than this model's max_position_embeddings ({config.MaxPositionEmbeddings}); shorten it");
        for (int i = 0; i < promptIds.Count; i++)
            if (promptIds[i] < 0 || promptIds[i] >= config.VocabSize)
                throw new ModelInputException($"prompt token id {promptIds[i]} at position {i} is outside the vocabulary [0, {config.VocabSize})");
    }

    /// <summary>Where an iterator leaves its stop reason (iterators have no out parameters).</summary>
    private sealed class Outcome
    {
        public StopReason Reason { get; set; } = StopReason.MaxTokens;
    }

    private IEnumerable<int> Run(IReadOnlyList<int> promptIds, GenerationOptions options, Outcome outcome, CancellationToken cancellationToken)
    {
        outcome.Reason = StopReason.MaxTokens;
        if (options.MaxNewTokens == 0) yield break;
        var sampler = new Sampler(options.Sampling);
        int? eos = options.StopAtEndOfText ? Model.Config.EosTokenId : null;
        // The last new token is never fed back, so prompt + max - 1 positions suffice (capped by the model's maximum).
        int capacity = (int)Math.Min(Model.Config.MaxPositionEmbeddings, (long)promptIds.Count + options.MaxNewTokens - 1);
        using var cache = new KeyValueCache(Model, batch: 1, Math.Max(capacity, promptIds.Count));
        var generated = new List<int>();
        cancellationToken.ThrowIfCancellationRequested();
        float[] logits = NextLogits(cache, promptIds.ToArray());
        while (true)
        {
            int token = sampler.Next(logits);
            generated.Add(token);
            yield return token;
            if (token == eos) { outcome.Reason = StopReason.EndOfText; yield break; }
            if (options.StopStrings.Count > 0)
            {
                // Ids without a token (a checkpoint's padding rows past the tokenizer's vocabulary) add no text.
                string text = Tokenizer!.Decode(generated.Where(id => Tokenizer.TokenText(id) != null));
                if (options.StopStrings.Any(stop => text.Contains(stop, StringComparison.Ordinal))) { outcome.Reason = StopReason.StopString; yield break; }
            }
            if (generated.Count == options.MaxNewTokens) { outcome.Reason = StopReason.MaxTokens; yield break; }
            if (cache.Remaining == 0) { outcome.Reason = StopReason.ContextFull; yield break; }
            cancellationToken.ThrowIfCancellationRequested();
            logits = NextLogits(cache, [token]);
        }
    }

    /// <summary>Runs <paramref name="ids"/> (one row) through the cache and returns the last position's logits [V].</summary>
    private float[] NextLogits(KeyValueCache cache, int[] ids)
    {
        // A scope per forward: nothing of it outlives this call (it must not stay open across a yield, since
        // scopes are per thread and nest with the caller's).
        using var scope = TensorScope.Begin();
        // Only the last position's logits are computed and copied: [1, 1, V], not [1, T, V] after a prefill of T.
        return Model.ForwardLast(Model.CreateInputIds(ids), cache).ToSingleArray();
    }
}
