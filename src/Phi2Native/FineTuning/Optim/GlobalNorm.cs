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
/// How the global norms a training step checks are obtained. Today each tensor's sum of squares comes back to the
/// host (<see cref="IBackend.SumOfSquares"/>, one value per tensor, the reads clipping needs anyway); the finite
/// check and the policy that acts on it (<see cref="Training.NonFinitePolicy"/>) only see the <see cref="NormReport"/>,
/// so a device reduction that also writes a non-finite flag and the first offending index can replace this alone.
/// </summary>
public static class GlobalNorm
{
    /// <summary>The global norm of the gradients of <paramref name="parameters"/>; a parameter without a gradient is left out, as in torch.</summary>
    /// <remarks><see cref="NormReport.FirstNonFinite"/> indexes <paramref name="parameters"/>, so it names the parameter even when some have no gradient.</remarks>
    public static NormReport OfGradients(IReadOnlyList<Tensor> parameters)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        return Measure(parameters, p => p.Grad);
    }

    /// <summary>The global norm of the values of <paramref name="tensors"/> (e.g. to check that parameters are finite).</summary>
    public static NormReport OfValues(IReadOnlyList<Tensor> tensors)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        return Measure(tensors, t => t);
    }

    private static NormReport Measure(IReadOnlyList<Tensor> tensors, Func<Tensor, Tensor?> select)
    {
        double sumOfSquares = 0, firstValue = double.NaN;
        int first = -1;
        for (int i = 0; i < tensors.Count; i++)
        {
            if (select(tensors[i]) is not { } tensor) continue;
            double squares = tensor.Backend.SumOfSquares(tensor);
            sumOfSquares += squares;
            if (first < 0 && !double.IsFinite(squares))
            {
                first = i;
                firstValue = squares;
            }
        }
        return new NormReport(Math.Sqrt(sumOfSquares), first, firstValue);
    }
}
