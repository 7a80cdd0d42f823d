using System.Runtime.CompilerServices;
using Phi2Native.Tensors;

namespace Phi2Native.Hosting;

/// <summary>
/// One turn per backend for the engines' generation steps: a backend is driven by one thread at a time (the CUDA
/// backend has one stream and its own scratch; the CPU backend's contract is the same), so concurrent generations, of
/// one engine or of several engines on a shared backend, take turns forward by forward.
/// </summary>
internal static class BackendTurns
{
    private static readonly ConditionalWeakTable<IBackend, SemaphoreSlim> s_turns = new();

    /// <summary>The turn of <paramref name="backend"/>: wait on it around anything that computes on, or frees memory of, that backend.</summary>
    public static SemaphoreSlim For(IBackend backend) => s_turns.GetValue(backend, _ => new SemaphoreSlim(1, 1));
}
