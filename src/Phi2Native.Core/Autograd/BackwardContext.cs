using Phi2Native.Tensors;

namespace Phi2Native.Autograd;

/// <summary>
/// What an op's backward uses to obtain gradient buffers and deliver gradients; it applies the
/// accumulation rule of <see cref="GradientTape"/>.
/// </summary>
public sealed class BackwardContext
{
    private readonly Dictionary<Tensor, Tensor> _gradients;
    private readonly Dictionary<Tensor, AutogradOp> _producers = new(ReferenceEqualityComparer.Instance);
    private readonly Dictionary<Tensor, int> _consumersLeft = new(ReferenceEqualityComparer.Instance);
    private readonly HashSet<Tensor> _throughActivation = new(ReferenceEqualityComparer.Instance);

    /// <summary>
    /// A context for running <paramref name="ops"/> (a tape, in recording order) backward: it knows each tensor's producer
    /// and how many of the recorded ops read it, so a consumer can tell when it gives a tensor its last contribution.
    /// </summary>
    internal BackwardContext(Dictionary<Tensor, Tensor> gradients, IReadOnlyList<AutogradOp> ops)
    {
        _gradients = gradients;
        foreach (var op in ops)
        {
            _producers[op.Output] = op;
            foreach (var input in op.Inputs)
                if (input is not null) _consumersLeft[input] = _consumersLeft.GetValueOrDefault(input) + 1;
        }
    }

    /// <summary>The tape calls this after <paramref name="op"/>'s backward ran or was skipped: its inputs have one reader fewer to hear from.</summary>
    internal void Finished(AutogradOp op)
    {
        foreach (var input in op.Inputs)
            if (input is not null && _consumersLeft.TryGetValue(input, out int left)) _consumersLeft[input] = left - 1;
    }

    /// <summary>The recorded op that produced <paramref name="tensor"/>, or null (a leaf, or a tensor made off the tape).</summary>
    internal AutogradOp? ProducerOf(Tensor tensor) => _producers.GetValueOrDefault(tensor);

    /// <summary>
    /// Whether the op running backward now, which reads <paramref name="input"/>, is the last recorded reader of it still
    /// to run backward: what it delivers for the input completes the input's gradient.
    /// </summary>
    internal bool IsLastReader(Tensor input) => _consumersLeft.GetValueOrDefault(input) == 1;

    /// <summary>Whether a gradient for <paramref name="input"/> has been delivered already.</summary>
    internal bool HasGradient(Tensor input) => input.IsLeaf ? input.Grad is not null : _gradients.ContainsKey(input);

    /// <summary>
    /// Says that the whole gradient delivered for <paramref name="output"/> (an activation's output) is already the
    /// gradient of the activation's input: its last reader multiplied it through the activation's derivative in its own
    /// product (GeluGradientFusion), so the producer must not do it again (<see cref="TakeThroughActivation"/>).
    /// </summary>
    internal void MarkThroughActivation(Tensor output) => _throughActivation.Add(output);

    /// <summary>Whether <see cref="MarkThroughActivation"/> was said of <paramref name="output"/>; forgets it.</summary>
    internal bool TakeThroughActivation(Tensor output) => _throughActivation.Remove(output);

    /// <summary>
    /// A fresh buffer for a gradient the backend overwrites (=), or null when <paramref name="input"/> needs none;
    /// pass the filled buffer to <see cref="Deliver"/>.
    /// </summary>
    public Tensor? NewGradient(Tensor? input) =>
        input is { RequiresGrad: true } ? input.Backend.Empty(input.Shape, input.DType) : null;

    /// <summary>
    /// The buffer a backend accumulates into (+=) for <paramref name="input"/>: a leaf's own <see cref="Tensor.Grad"/>,
    /// created as zeros on first use, or the pending gradient of an intermediate; null when none is needed.
    /// </summary>
    public Tensor? AccumulatorFor(Tensor? input)
    {
        if (input is not { RequiresGrad: true }) return null;
        var backend = input.Backend;
        if (input.IsLeaf)
        {
            if (input.Grad == null) ReplaceLeafGradient(input, backend.Zeros(input.Shape, input.DType));
            // Never accumulate in place into memory another gradient shares: take a private copy first.
            else if (input.Grad.Storage.IsShared) ReplaceLeafGradient(input, backend.Cast(input.Grad, input.DType));
            return input.Grad;
        }
        if (!_gradients.TryGetValue(input, out var pending)) return _gradients[input] = backend.Zeros(input.Shape, input.DType);
        if (!pending.Storage.IsShared) return pending;
        _gradients[input] = backend.Cast(pending, pending.DType);
        pending.Dispose();
        return _gradients[input];
    }

    /// <summary>
    /// <see cref="AccumulatorFor"/> for an op that can also write its gradient (=) in place of adding it: where
    /// <paramref name="input"/> is a leaf with no gradient yet, an uninitialised buffer becomes its gradient and
    /// <paramref name="accumulate"/> is false, and the op must write every element of it (that saves the zero fill
    /// AccumulatorFor runs); otherwise AccumulatorFor's buffer, <paramref name="accumulate"/> true.
    /// </summary>
    internal Tensor? GradientFor(Tensor? input, out bool accumulate)
    {
        accumulate = input is not { RequiresGrad: true, IsLeaf: true, Grad: null };
        if (accumulate) return AccumulatorFor(input);
        ReplaceLeafGradient(input!, input!.Backend.Empty(input.Shape, input.DType));
        return input.Grad;
    }

    /// <summary>
    /// The gradient already pending for <paramref name="input"/>, for an op that can add its contribution into it (+=)
    /// in place of writing a fresh buffer (<see cref="NewGradient"/>) and delivering it: that saves the temporary and the
    /// add <see cref="Deliver"/> would run (a cuBLAS product takes beta = 1 for it). It is the input's own gradient where
    /// an op that ran backward earlier delivered one (a tensor feeding several ops: q, k, v, fc1 reading one LayerNorm;
    /// a Linear and its LoRA branch reading one x), or a leaf's <see cref="Tensor.Grad"/>; null where the input needs no
    /// gradient, has none yet, or its buffer is shared with another tensor's gradient or of another dtype (then write a
    /// fresh one and deliver it). The op must not deliver what it added here.
    /// </summary>
    public Tensor? PendingGradient(Tensor? input)
    {
        if (input is not { RequiresGrad: true }) return null;
        var pending = input.IsLeaf ? input.Grad : _gradients.GetValueOrDefault(input);
        return pending is { Storage.IsShared: false } && pending.DType == input.DType && pending.ElementCount == input.ElementCount ? pending : null;
    }

    /// <summary>
    /// <see cref="AccumulatorFor"/> of each of <paramref name="inputs"/>, except that the leaves among them that have no
    /// gradient yet get views of one zeroed buffer, in order (one allocation and one fill instead of one each): the
    /// fused q/k/v projection accumulates the weight gradients of adjacent trained projections with one product.
    /// </summary>
    internal Tensor?[] AccumulatorsFor(params Tensor?[] inputs)
    {
        var fresh = inputs.Where(input => input is { RequiresGrad: true, IsLeaf: true, Grad: null }).Select(input => input!).ToList();
        if (fresh.Count > 1 && fresh.All(leaf => leaf.Backend == fresh[0].Backend && leaf.DType == fresh[0].DType))
        {
            using var buffer = fresh[0].Backend.Zeros([checked((int)fresh.Sum(leaf => leaf.ElementCount))], fresh[0].DType);
            long offset = 0;
            foreach (var leaf in fresh)
            {
                ReplaceLeafGradient(leaf, buffer.View(offset, leaf.Shape.ToArray()));
                offset += leaf.ElementCount;
            }
        }
        return [.. inputs.Select(AccumulatorFor)];
    }

    /// <summary>
    /// Hands <paramref name="gradient"/> (now owned by the context) to <paramref name="input"/>: it becomes the
    /// input's gradient when it has none yet, and is added to it otherwise. Null gradients are ignored.
    /// </summary>
    public void Deliver(Tensor? input, Tensor? gradient)
    {
        if (gradient == null) return;
        if (input is not { RequiresGrad: true }) { gradient.Dispose(); return; }
        var backend = input.Backend;
        if (input.IsLeaf)
        {
            if (input.Grad == null) ReplaceLeafGradient(input, gradient.Storage.IsShared ? backend.Cast(gradient, gradient.DType) : gradient);
            else if (input.Grad.Storage.IsShared) ReplaceLeafGradient(input, backend.Add(input.Grad, gradient));
            else backend.AddInPlace(input.Grad, gradient);
            if (input.Grad != gradient) gradient.Dispose();
            return;
        }
        if (!_gradients.TryGetValue(input, out var pending)) { _gradients[input] = gradient; return; }
        // A buffer shared with another tensor's gradient (a view handed to two inputs) is never written in place.
        if (pending.Storage.IsShared) { _gradients[input] = backend.Add(pending, gradient); pending.Dispose(); }
        else backend.AddInPlace(pending, gradient);
        gradient.Dispose();
    }

    private static void ReplaceLeafGradient(Tensor leaf, Tensor gradient)
    {
        var old = leaf.Grad;
        // Leaf gradients outlive every scope: they belong to the leaf until ZeroGrad or Dispose.
        leaf.Grad = TensorScope.Detach(gradient);
        if (old != null && old != gradient) old.Dispose();
    }
}
