namespace Phi2Native.Models.Phi2;

/// <summary>
/// What a model's forwards have computed so far, for tests and benchmarks that check work is not repeated or wasted
/// (a decode step computes one position per row; a prefill computes one row of logits per prompt). Thread-safe.
/// </summary>
internal sealed class ForwardCounters
{
    private long _tokens, _logitRows;

    /// <summary>Positions run through the layers by every forward (B x T per call, training or inference, with or without a cache).</summary>
    public long TokensComputed => Interlocked.Read(ref _tokens);

    /// <summary>Rows of logits computed by lm_head (B x T per full forward, B per last-position forward): each is V x C multiply-adds and V floats.</summary>
    public long LogitRowsComputed => Interlocked.Read(ref _logitRows);

    internal void AddTokens(long count) => Interlocked.Add(ref _tokens, count);

    internal void AddLogitRows(long count) => Interlocked.Add(ref _logitRows, count);
}
