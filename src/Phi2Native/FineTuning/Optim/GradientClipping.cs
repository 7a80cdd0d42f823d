using Phi2Native.Tensors;

namespace Phi2Native.FineTuning.Optim;

/// <summary>Gradient clipping, as torch.nn.utils does it.</summary>
public static class GradientClipping
{
    /// <summary>torch's guard against dividing by a zero norm, added to the total before the division.</summary>
    public const double NormEpsilon = 1e-6;

    /// <summary>
    /// Scales all gradients together so that their global L2 norm is at most <paramref name="maxNorm"/>:
    /// torch.nn.utils.clip_grad_norm_ (norm type 2). The coefficient is <c>maxNorm / (total + 1e-6)</c>, applied only
    /// when it is below 1, so gradients already inside the bound are not touched.
    /// </summary>
    /// <param name="parameters">The parameters; those whose <see cref="Tensor.Grad"/> is null are left out, as in torch.</param>
    /// <param name="maxNorm">The largest global norm allowed: a finite number &gt; 0.</param>
    /// <returns>
    /// The global norm before clipping (0 when no parameter has a gradient). A non-finite value means a gradient
    /// overflowed and the gradients are unusable (as in torch, which scales them by 0 or NaN then): a training loop
    /// should check <see cref="double.IsFinite"/> and skip the step.
    /// </returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxNorm"/> is not a finite positive number.</exception>
    public static double ClipGradientsByGlobalNorm(IEnumerable<Tensor> parameters, double maxNorm)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        if (!NumberChecks.IsFinitePositive(maxNorm)) throw new ArgumentOutOfRangeException(nameof(maxNorm), maxNorm, "the maximum gradient norm must be a finite number > 0");
        var gradients = parameters.Select(p => p.Grad).ToList();
        if (GlobalNorm.Read(gradients, maxNorm) is not { } report) return 0;
        if (report.ClipScale != 1)
            foreach (var gradient in gradients.OfType<Tensor>()) gradient.Backend.ScaleInPlace(gradient, report.ClipScale);
        return report.Norm;
    }
}
