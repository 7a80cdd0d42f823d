using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Autograd;

/// <summary>
/// Records differentiable ops as they run on this thread and replays them backwards.
/// </summary>
/// <remarks>
/// <para>Recording: while a tape is current, an op whose inputs include one that requires a gradient is
/// recorded and its output requires a gradient too. An op none of whose inputs requires a gradient is not
/// recorded, so a frozen branch costs no backward work at all. Without a tape nothing is recorded (inference).</para>
/// <para>The accumulation rule. Parameter (leaf) gradients accumulate: <see cref="Tensor.Grad"/> += across
/// backward passes until <see cref="Tensor.ZeroGrad"/> (this is how gradient accumulation works). Activation
/// gradients are written (=) by the op that computes them; when a tensor feeds several ops, the contributions
/// are summed into its pending gradient, which is freed as soon as the op that produced the tensor has run
/// backward.</para>
/// </remarks>
public sealed class GradientTape : IDisposable
{
    [ThreadStatic] private static GradientTape? t_current;

    private readonly GradientTape? _previous;
    private readonly List<AutogradOp> _ops = new();
    private bool _backwardDone;

    private GradientTape(GradientTape? previous) => _previous = previous;

    /// <summary>The tape recording on this thread, or null.</summary>
    public static GradientTape? Current => t_current;

    /// <summary>Starts recording on this thread until the tape is disposed.</summary>
    public static GradientTape Begin() => t_current = new GradientTape(t_current);

    /// <summary>The ops recorded so far, in execution order.</summary>
    public IReadOnlyList<AutogradOp> Ops => _ops;

    /// <summary>How many ops ran backward in <see cref="Backward"/> (ops whose output got no gradient are skipped).</summary>
    public int BackwardOpsRun { get; private set; }

    internal void Add(AutogradOp op)
    {
        if (_backwardDone) throw new InvalidOperationException("this tape already ran backward; begin a new tape for the next step");
        _ops.Add(op);
    }

    /// <summary>
    /// Back-propagates from the one-element tensor <paramref name="loss"/> (seed 1): every leaf that requires a
    /// gradient and influenced the loss gets it added to its <see cref="Tensor.Grad"/>. Runs once per tape.
    /// </summary>
    public void Backward(Tensor loss)
    {
        if (_backwardDone) throw new InvalidOperationException("Backward already ran on this tape");
        if (loss.ElementCount != 1) throw new ArgumentException($"Backward needs a one-element loss, got [{loss.ShapeText}]", nameof(loss));
        if (!loss.RequiresGrad) throw new InvalidOperationException("the loss does not depend on anything that requires a gradient (is everything frozen, or was no tape active?)");
        _backwardDone = true;
        var gradients = new Dictionary<Tensor, Tensor>(ReferenceEqualityComparer.Instance);
        var context = new BackwardContext(gradients, _ops);
        using var phase = ProfileScope.Phase(ProfilePhase.Backward);
        context.Deliver(loss, loss.Backend.FromBytes(BitConverter.GetBytes(1.0), DType.F64, loss.Shape, loss.DType));
        for (int i = _ops.Count - 1; i >= 0; i--)
        {
            var op = _ops[i];
            if (!gradients.Remove(op.Output, out var dOutput)) { op.ReleaseSaved(); context.Finished(op); continue; }
            using (ProfileScope.Module(op.Module))
                op.Backward(dOutput, context);
            BackwardOpsRun++;
            dOutput.Dispose();
            op.ReleaseSaved();
            context.Finished(op);
        }
        foreach (var leftover in gradients.Values) leftover.Dispose();
    }

    /// <summary>Stops recording; the ops' saved tensors belong to their TensorScope.</summary>
    public void Dispose()
    {
        if (t_current == this) t_current = _previous;
        if (!_backwardDone) foreach (var op in _ops) op.ReleaseSaved();
        _ops.Clear();
    }
}
