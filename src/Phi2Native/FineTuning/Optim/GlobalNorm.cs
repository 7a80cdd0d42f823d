using Phi2Native.Backends.Ops.Optimizer;
using Phi2Native.Tensors;

namespace Phi2Native.FineTuning.Optim;

/// <summary>
/// A global L2 norm over a list of tensors and the first tensor whose own sum of squares is not finite, so a
/// non-finite norm can be pinned on one parameter.
/// </summary>
/// <param name="Norm">sqrt of the sum over the tensors of their sums of squares; NaN or infinite when one of them is.</param>
/// <param name="FirstNonFinite">The index (in the list measured) of the first tensor whose sum of squares is NaN or infinite; -1 when there is none.</param>
/// <param name="FirstNonFiniteValue">That tensor's sum of squares (NaN or an infinity); NaN when there is none.</param>
public readonly record struct NormReport(double Norm, int FirstNonFinite, double FirstNonFiniteValue)
{
    /// <summary>True when the norm is a finite number.</summary>
    public bool IsFinite => double.IsFinite(Norm);
}

/// <summary>
/// Global norms measured with <see cref="GradientCheckOp"/> and read back at once: for a caller that wants the value
/// now (clipping by hand, checking parameters before a checkpoint). A training step measures into its own
/// <see cref="StepStatus"/> instead and reads it once, after the update is queued.
/// </summary>
public static class GlobalNorm
{
    /// <summary>The global norm of the gradients of <paramref name="parameters"/>; a parameter without a gradient is left out, as in torch.</summary>
    /// <remarks><see cref="NormReport.FirstNonFinite"/> indexes <paramref name="parameters"/>, so it names the parameter even when some have no gradient.</remarks>
    public static NormReport OfGradients(IReadOnlyList<Tensor> parameters)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        return Measure(parameters.Select(p => p.Grad).ToList());
    }

    /// <summary>The global norm of the tensors themselves (for example parameters after an update).</summary>
    public static NormReport OfValues(IReadOnlyList<Tensor> tensors)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        return Measure(tensors);
    }

    /// <summary>The norm part of a step's status.</summary>
    public static NormReport Of(StepStatusReport status) =>
        new(status.Norm, status.FirstNonFinite, status.FirstNonFinite >= 0 ? status.FirstNonFiniteSquares : double.NaN);

    private static NormReport Measure(IReadOnlyList<Tensor?> tensors) =>
        Read(tensors, 0) is { } status ? Of(status) : new NormReport(0, -1, double.NaN);

    /// <summary>Measures <paramref name="tensors"/> into a status of their own and reads it; null when every entry is null.</summary>
    internal static StepStatusReport? Read(IReadOnlyList<Tensor?> tensors, double maxNorm)
    {
        if (tensors.FirstOrDefault(t => t is not null) is not { } any) return null;
        using var status = new StepStatus(any.Backend);
        GradientCheckOp.Measure(tensors, [], maxNorm, status);
        return status.Read();
    }
}
