namespace Phi2Native.Hosting;

/// <summary>
/// One <see cref="Phi2Engine.GenerateAsync"/> stream: the generator's tokens are pulled one step at a time on the thread
/// pool, each step in the backend's turn, so nothing is computed before the consumer asks for it and a consumer that
/// leaves stops the generation before its next forward. <see cref="CloseAsync"/> frees the KV cache in the backend's
/// turn once the step in flight, if any, has finished.
/// </summary>
internal sealed class EngineGeneration
{
    private readonly IEnumerator<int> _tokens;
    private readonly SemaphoreSlim _backendTurn;
    private readonly SemaphoreSlim _ownTurn = new(1, 1);   // a step and the close never overlap
    private readonly CancellationTokenSource _stop = new();
    private bool _closed;

    /// <param name="tokens">Makes the token stream, given the token that stops it (checked before each forward).</param>
    /// <param name="backendTurn">The backend's turn (<see cref="BackendTurns.For"/>).</param>
    public EngineGeneration(Func<CancellationToken, IEnumerable<int>> tokens, SemaphoreSlim backendTurn)
    {
        _backendTurn = backendTurn;
        _tokens = tokens(_stop.Token).GetEnumerator();
    }

    /// <summary>Asks the generation to stop before its next forward; any thread, any time.</summary>
    public void Cancel()
    {
        try { _stop.Cancel(); }
        catch (ObjectDisposedException) { }
    }

    /// <summary>The next token, or null when the generation has ended.</summary>
    /// <exception cref="OperationCanceledException">The generation was cancelled or closed.</exception>
    public async Task<int?> NextAsync()
    {
        await _ownTurn.WaitAsync().ConfigureAwait(false);
        try
        {
            if (_closed) throw new OperationCanceledException("the generation was stopped (its engine was disposed)");
            await _backendTurn.WaitAsync(_stop.Token).ConfigureAwait(false);
            try
            {
                return await Task.Run(() => _tokens.MoveNext() ? _tokens.Current : (int?)null, CancellationToken.None).ConfigureAwait(false);
            }
            finally
            {
                _backendTurn.Release();
            }
        }
        finally
        {
            _ownTurn.Release();
        }
    }

    /// <summary>Stops the generation and frees its KV cache, after the step in flight, if any; idempotent.</summary>
    public async Task CloseAsync()
    {
        Cancel();
        await _ownTurn.WaitAsync().ConfigureAwait(false);
        try
        {
            if (_closed) return;
            _closed = true;
            await _backendTurn.WaitAsync().ConfigureAwait(false);
            try
            {
                _tokens.Dispose();
            }
            finally
            {
                _backendTurn.Release();
            }
        }
        finally
        {
            _ownTurn.Release();
        }
    }
}
