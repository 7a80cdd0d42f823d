namespace Phi2Native.Tensors;

/// <summary>
/// Frees tensors at a known point: every tensor created on this thread while the scope is the innermost
/// one is disposed with the scope, unless it was passed to <see cref="Keep"/>.
/// </summary>
/// <example><code>
/// using (var scope = TensorScope.Begin())
/// {
///     var logits = model.Forward(ids);        // intermediates belong to the scope
///     result = scope.Keep(logits);            // survives; now owned by the enclosing scope, if any
/// }                                           // everything else is freed here
/// </code></example>
/// <remarks>Scopes are per thread and nest. Tensors created outside any scope (model parameters) are owned by their creator.</remarks>
public sealed class TensorScope : IDisposable
{
    [ThreadStatic] private static TensorScope? t_current;

    private readonly TensorScope? _parent;
    private readonly HashSet<Tensor> _tensors = new(ReferenceEqualityComparer.Instance);
    private bool _disposed;

    private TensorScope(TensorScope? parent) => _parent = parent;

    /// <summary>The innermost scope on this thread, or null.</summary>
    public static TensorScope? Current => t_current;

    /// <summary>Opens a scope; it becomes the innermost one on this thread until disposed.</summary>
    public static TensorScope Begin() => t_current = new TensorScope(t_current);

    /// <summary>Number of live tensors this scope will dispose.</summary>
    public int Count => _tensors.Count;

    /// <summary>
    /// Takes <paramref name="tensor"/> out of this scope so it survives it; it moves to the enclosing scope,
    /// or to the caller's ownership when there is none.
    /// </summary>
    public Tensor Keep(Tensor tensor)
    {
        if (_tensors.Remove(tensor)) _parent?._tensors.Add(tensor);
        return tensor;
    }

    /// <summary>Takes <paramref name="tensor"/> out of whatever scope holds it on this thread: the caller now owns it.</summary>
    public static Tensor Detach(Tensor tensor)
    {
        for (var scope = t_current; scope != null; scope = scope._parent)
            if (scope._tensors.Remove(tensor)) break;
        return tensor;
    }

    internal static void Register(Tensor tensor) => t_current?._tensors.Add(tensor);

    /// <summary>Disposes every tensor still in the scope and makes the enclosing scope current again.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (t_current != this)
            throw new InvalidOperationException("TensorScope disposed out of order: dispose inner scopes first (use `using`).");
        t_current = _parent;
        foreach (var tensor in _tensors) tensor.Dispose();
        _tensors.Clear();
    }
}
