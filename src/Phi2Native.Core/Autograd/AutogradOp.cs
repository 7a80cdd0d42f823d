using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Autograd;

/// <summary>
/// One recorded differentiable op: its inputs, its output, what it saved, and its backward.
/// Each subclass keeps its forward (a static Apply) beside its backward.
/// </summary>
public abstract class AutogradOp
{
    private readonly Tensor?[] _inputs;

    /// <summary>Creates the op over its inputs (null for an absent optional input such as a bias).</summary>
    protected AutogradOp(params Tensor?[] inputs) => _inputs = inputs;

    /// <summary>The op's name: the same as its backend op and kernel.</summary>
    public abstract string Name { get; }

    /// <summary>The op's inputs, in Apply's order; null where an optional input was absent.</summary>
    public IReadOnlyList<Tensor?> Inputs => _inputs;

    /// <summary>The module that recorded the op, while profiling (<see cref="ProfileScope"/>), so backward is attributed to it too; null otherwise.</summary>
    public string? Module { get; private set; }

    /// <summary>The tensor this op produced.</summary>
    public Tensor Output { get; internal set; } = null!;

    /// <summary>
    /// Computes the gradients of the inputs that require one, from the output's gradient, and hands them to
    /// <paramref name="context"/>. Inputs that need no gradient must cost nothing.
    /// </summary>
    protected internal abstract void Backward(Tensor dOutput, BackwardContext context);

    /// <summary>Frees what only backward needed (statistics, masks); called after backward, or at once when the op is not recorded.</summary>
    protected internal virtual void ReleaseSaved() { }

    /// <summary>
    /// Records the op on the current tape when one is active and any input requires a gradient, and returns
    /// <paramref name="output"/> marked accordingly; otherwise releases what the op saved and returns the output as it is.
    /// </summary>
    protected static Tensor Record(AutogradOp op, Tensor output)
    {
        var tape = GradientTape.Current;
        if (tape == null || !op._inputs.Any(input => input is { RequiresGrad: true }))
        {
            op.ReleaseSaved();
            return output;
        }
        op.Output = output;
        op.Module = ProfileScope.CurrentModule;
        output.RequiresGrad = true;
        output.Producer = op;
        tape.Add(op);
        return output;
    }
}
