using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;

namespace Phi2Native.Text;

/// <summary>
/// Autoregressive generation with a KV cache: the prompt is prefilled in one forward, then each step samples a
/// token from the last logits row and runs that token alone (one query position) against the cached keys and values.
/// </summary>
/// <remarks>
/// Tokens are exposed one by one as they are chosen (<see cref="Stream"/>), or collected (<see cref="Generate(IReadOnlyList{int}, GenerationOptions, Action{int}?, CancellationToken)"/>).
/// A batch of prompts, of equal or different lengths (<see cref="StreamBatch"/>, <see cref="GenerateBatch"/>), runs
/// as one batch through one cache: one prefill of all prompts, then one forward per step for all rows; every row
/// gives exactly the tokens it gives alone (how, in <see cref="BatchDecoding"/>).
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
        return BatchDecoding.Run(Model, Tokenizer, [promptIds], options, new StopReason[1], cancellationToken).Select(token => token.Id);
    }

    /// <summary>Generates for <paramref name="promptIds"/> as <see cref="Stream"/> does, calling <paramref name="onToken"/> with each new id as it comes.</summary>
    /// <exception cref="ModelInputException">The prompt is empty, longer than max_position_embeddings, or holds an id outside the vocabulary.</exception>
    /// <exception cref="Phi2Exception">Invalid options, or stop strings without a tokenizer.</exception>
    /// <exception cref="OperationCanceledException">Cancelled.</exception>
    public GenerationResult Generate(IReadOnlyList<int> promptIds, GenerationOptions options, Action<int>? onToken = null,
        CancellationToken cancellationToken = default) =>
        GenerateBatch([promptIds], options, onToken is null ? null : (_, id) => onToken(id), cancellationToken)[0];

    /// <summary>Encodes <paramref name="prompt"/> with the tokenizer and generates from it.</summary>
    /// <exception cref="Phi2Exception">No tokenizer was given, or as the id overload.</exception>
    public GenerationResult Generate(string prompt, GenerationOptions options, Action<int>? onToken = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        var tokenizer = Tokenizer ?? throw new Phi2Exception("a text prompt needs a tokenizer; pass one to the Generator or give the prompt as ids");
        return Generate(tokenizer.Encode(prompt), options, onToken, cancellationToken);
    }

    /// <summary>
    /// The new tokens of every prompt of a batch (lengths may differ), run as one batch: each round yields at most one
    /// token per row, in row order, as soon as it is chosen; a row that has stopped yields nothing more while the others
    /// go on. Each row gives exactly the tokens it gives alone; with a seed s, row r samples with seed s + r so rows
    /// differ yet repeat. Nothing runs until the enumeration starts.
    /// </summary>
    /// <exception cref="ModelInputException">No prompt, or a prompt is empty, too long or holds an id outside the vocabulary (all are checked before any runs).</exception>
    /// <exception cref="Phi2Exception">Invalid options, or stop strings without a tokenizer.</exception>
    /// <exception cref="OperationCanceledException">Cancelled (checked before each forward).</exception>
    public IEnumerable<BatchToken> StreamBatch(IReadOnlyList<IReadOnlyList<int>> prompts, GenerationOptions options, CancellationToken cancellationToken = default)
    {
        CheckBatch(prompts, options);
        return BatchDecoding.Run(Model, Tokenizer, prompts, options, new StopReason[prompts.Count], cancellationToken);
    }

    /// <summary>
    /// Generates for each prompt of a batch as <see cref="StreamBatch"/> does, calling <paramref name="onToken"/> with
    /// (row, id) for each new token as it comes; returns each row's tokens and stop reason, in the prompts' order.
    /// </summary>
    /// <exception cref="ModelInputException">No prompt, or a prompt is empty, too long or holds an id outside the vocabulary (all are checked before any runs).</exception>
    /// <exception cref="Phi2Exception">Invalid options, or stop strings without a tokenizer.</exception>
    /// <exception cref="OperationCanceledException">Cancelled.</exception>
    public IReadOnlyList<GenerationResult> GenerateBatch(IReadOnlyList<IReadOnlyList<int>> prompts, GenerationOptions options,
        Action<int, int>? onToken = null, CancellationToken cancellationToken = default)
    {
        CheckBatch(prompts, options);
        var reasons = new StopReason[prompts.Count];
        var tokens = prompts.Select(_ => new List<int>()).ToArray();
        foreach (var (row, id) in BatchDecoding.Run(Model, Tokenizer, prompts, options, reasons, cancellationToken))
        {
            tokens[row].Add(id);
            onToken?.Invoke(row, id);
        }
        return tokens.Select((rowTokens, row) => new GenerationResult(rowTokens, reasons[row])).ToArray();
    }

    private void CheckBatch(IReadOnlyList<IReadOnlyList<int>> prompts, GenerationOptions options)
    {
        ArgumentNullException.ThrowIfNull(prompts);
        if (prompts.Count == 0) throw new ModelInputException("a batch needs at least one prompt");
        foreach (var prompt in prompts) Check(prompt, options);
    }

    /// <summary>Checks a prompt and options as <see cref="Stream"/> does, before anything runs.</summary>
    internal void Check(IReadOnlyList<int> promptIds, GenerationOptions options)
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
}
