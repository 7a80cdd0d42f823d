using Phi2Native.Determinism;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;

namespace Phi2Native.Text;

/// <summary>One token of a batch as it is chosen: the prompt's row in the batch and the new id.</summary>
/// <param name="Row">Index of the prompt in the batch.</param>
/// <param name="Id">The new token id.</param>
public readonly record struct BatchToken(int Row, int Id);

/// <summary>
/// The decoding loop behind <see cref="Generator"/>: B prompts (B = 1 for a single one) run as one batch through one
/// KV cache, each row giving exactly the tokens it gives alone.
/// </summary>
/// <remarks>
/// Prompts of different lengths are prefilled right-padded to the longest: every real position attends only to
/// earlier real positions of its own row (attention is causal and the padding comes last), so no mask is needed, and
/// each row's first logits come from its own last prompt position. Each row is then truncated to its prompt in the
/// cache, so the padding is forgotten and overwritten, and from there every row decodes at its own positions
/// (the cache's per-row lengths). This differs from HF's left padding with shifted position ids, but gives each row
/// the positions 0, 1, 2, ... it has alone, with no pad ever attended.
/// <para>A row that stops (eos, stop string, max tokens, its context full) yields nothing more; until every row has
/// stopped it rides along in the batch on one throwaway token at position 0 of an emptied cache row. That costs
/// little: a decode step's time is mostly the pass over the weights, shared by all rows.</para>
/// <para>On the CUDA backend (with <see cref="GenerationOptions.CudaGraphs"/>) every decode step goes through one
/// <see cref="DecodeGraph"/>: the first runs its operations eagerly (loading the kernels, warming the allocator's cache),
/// the second captures them, and every step from there replays the graph: greedy rows take the device's argmax, sampled
/// rows the host's sampler over the logits the graph copies out. A step that cannot be captured leaves the rest of the
/// generation eager.</para>
/// </remarks>
internal static class BatchDecoding
{
    private sealed class Row(int capacity, Sampler sampler)
    {
        public int Capacity { get; } = capacity;
        public Sampler Sampler { get; } = sampler;
        public List<int> Generated { get; } = [];
        public bool Finished { get; set; }
    }

    /// <summary>
    /// Yields each row's tokens as they are chosen, a round of at most one per unfinished row per forward; leaves each
    /// row's stop reason in <paramref name="reasons"/> (length B). Prompts and options are checked by the caller.
    /// With a seed s, row r samples with seed s + r.
    /// </summary>
    public static IEnumerable<BatchToken> Run(Phi2Model model, TextTokenizer? tokenizer, IReadOnlyList<IReadOnlyList<int>> prompts,
        GenerationOptions options, StopReason[] reasons, CancellationToken cancellationToken)
    {
        int batch = prompts.Count, vocab = model.Config.VocabSize;
        Array.Fill(reasons, StopReason.MaxTokens);
        if (options.MaxNewTokens == 0) yield break;
        int? eos = options.StopAtEndOfText ? model.Config.EosTokenId : null;
        var rows = new Row[batch];
        for (int r = 0; r < batch; r++)
        {
            var sampling = options.Sampling.Seed is ulong seed ? options.Sampling with { Seed = Seeds.Derive(seed, SeedPurpose.SamplingRow, r) } : options.Sampling;
            rows[r] = new Row(RowCapacity(model.Config, prompts[r].Count, options.MaxNewTokens), new Sampler(sampling));
        }
        using var cache = new KeyValueCache(model, batch, rows.Max(row => row.Capacity));
        cancellationToken.ThrowIfCancellationRequested();

        // Prefill, right-padded to the longest prompt with each row's last token (any valid id would do: no real
        // position sees it); each row's logits are taken at its own last prompt position. [B, 1, V]
        int longest = prompts.Max(p => p.Count);
        var padded = new int[batch * longest];
        for (int r = 0; r < batch; r++)
        {
            var row = padded.AsSpan(r * longest, longest);
            for (int t = 0; t < row.Length; t++) row[t] = prompts[r][Math.Min(t, prompts[r].Count - 1)];
        }
        float[] logits = Logits(model, cache, padded, batch, prompts.Select(p => p.Count - 1).ToArray());
        for (int r = 0; r < batch; r++) cache.Truncate(r, prompts[r].Count);

        var next = new int[batch];
        int[]? chosen = null;   // the device's greedy ids of the last graph step, in place of logits
        bool graphs = options.CudaGraphs && DecodeGraph.Supports(model);
        DecodeGraph? graph = null;
        try
        {
            while (true)
            {
                for (int r = 0; r < batch; r++)
                {
                    var row = rows[r];
                    if (row.Finished) continue;
                    int token = chosen is not null ? chosen[r] : row.Sampler.Next(logits.AsSpan(r * vocab, vocab));
                    row.Generated.Add(token);
                    next[r] = token;
                    yield return new BatchToken(r, token);
                    if (Stop(row, token, eos, options, tokenizer, cache.RowLength(r)) is StopReason reason)
                    {
                        row.Finished = true;
                        reasons[r] = reason;
                    }
                }
                if (rows.All(row => row.Finished)) yield break;
                cancellationToken.ThrowIfCancellationRequested();
                for (int r = 0; r < batch; r++)
                    if (rows[r].Finished)
                    {
                        // The throwaway token of a stopped row: its cache row is emptied so it never outgrows the cache.
                        // After a greedy graph step it is the id the device already holds, so nothing is uploaded for it.
                        cache.Truncate(r, 0);
                        next[r] = chosen?[r] ?? 0;
                    }
                chosen = null;
                if (graphs)
                {
                    try
                    {
                        graph ??= new DecodeGraph(model, cache, options.Sampling.IsGreedy);
                        var (deviceChoice, hostLogits) = graph.Step(next);
                        (chosen, logits) = (deviceChoice, hostLogits ?? logits);
                        continue;
                    }
                    catch (DecodeGraphCaptureException)
                    {
                        // Nothing ran and the cache's bookkeeping is as it was: this step and the rest run eagerly.
                        graph!.Dispose();
                        graph = null;
                        graphs = false;
                    }
                }
                logits = Logits(model, cache, next, batch, null);
            }
        }
        finally
        {
            graph?.Dispose();
        }
    }

    /// <summary>
    /// Positions a row of <paramref name="promptLength"/> tokens needs: the last new token is never fed back, so
    /// prompt + max - 1 suffice, capped by the model's maximum (and never below the prompt).
    /// </summary>
    private static int RowCapacity(Phi2Config config, int promptLength, int maxNewTokens) =>
        Math.Max((int)Math.Min(config.MaxPositionEmbeddings, (long)promptLength + maxNewTokens - 1), promptLength);

    /// <summary>Why the row stops after <paramref name="token"/>, or null; <paramref name="filled"/> is its cache length.</summary>
    private static StopReason? Stop(Row row, int token, int? eos, GenerationOptions options, TextTokenizer? tokenizer, int filled)
    {
        if (token == eos) return StopReason.EndOfText;
        if (options.StopStrings.Count > 0)
        {
            // Ids without a token (a checkpoint's padding rows past the tokenizer's vocabulary) add no text.
            string text = tokenizer!.Decode(row.Generated.Where(id => tokenizer.TokenText(id) != null));
            if (options.StopStrings.Any(stop => text.Contains(stop, StringComparison.Ordinal))) return StopReason.StopString;
        }
        if (row.Generated.Count == options.MaxNewTokens) return StopReason.MaxTokens;
        if (filled == row.Capacity) return StopReason.ContextFull;
        return null;
    }

    /// <summary>
    /// Runs ids [B, T] (row-major) through the cache -> logits [B, 1, V] on the host, at position
    /// <paramref name="positions"/>[b] of each row, or the last when null.
    /// </summary>
    private static float[] Logits(Phi2Model model, KeyValueCache cache, int[] ids, int batch, int[]? positions)
    {
        // A scope per forward: nothing of it outlives this call (it must not stay open across a yield, since
        // scopes are per thread and nest with the caller's).
        using var scope = TensorScope.Begin();
        var input = model.CreateInputIds(ids, batch);
        return (positions is null ? model.ForwardLast(input, cache) : model.Forward(input, cache, positions)).ToSingleArray();
    }
}
