using Phi2Native.FineTuning.Optim;

namespace Phi2Native.FineTuning.Training;

/// <summary>Which value of a training step was not finite.</summary>
public enum NonFiniteQuantity
{
    /// <summary>The loss.</summary>
    Loss,

    /// <summary>The gradient of one parameter (<see cref="NonFiniteValue.Parameter"/>).</summary>
    Gradient,

    /// <summary>The global gradient norm, while each parameter's part was finite: the sum of their squares overflowed.</summary>
    GradientNorm,

    /// <summary>
    /// A trained parameter itself (<see cref="NonFiniteValue.Parameter"/>), after a step whose loss and gradient were
    /// finite (its update overflowed, e.g. under a huge weight decay); checked before every checkpoint, so none holds it.
    /// </summary>
    Parameter,
}

/// <summary>A value of one training step that is not finite: the loss, or the gradient of one parameter.</summary>
/// <param name="Step">The optimizer step (1-based) that produced it.</param>
/// <param name="Quantity">Which value it was.</param>
/// <param name="Parameter">For <see cref="NonFiniteQuantity.Gradient"/> and <see cref="NonFiniteQuantity.Parameter"/>, the parameter (its PEFT key, as in adapter_model.safetensors); null otherwise.</param>
/// <param name="Value">The loss, the parameter's or its gradient's sum of squares, or the norm: NaN or an infinity.</param>
public sealed record NonFiniteValue(int Step, NonFiniteQuantity Quantity, string? Parameter, double Value)
{
    /// <summary>"the loss is NaN", "the gradient of lm_head.weight is not finite (its sum of squares is +inf)".</summary>
    public string What => Quantity switch
    {
        NonFiniteQuantity.Loss => $"the loss is {Text(Value)}",
        NonFiniteQuantity.Gradient => $"the gradient of {Parameter} is not finite (its sum of squares is {Text(Value)})",
        NonFiniteQuantity.Parameter => $"the parameter {Parameter} is not finite after step {Step}'s update (its sum of squares is {Text(Value)}; a learning rate or weight decay too large?)",
        _ => $"the global gradient norm is {Text(Value)} (the sum of the gradients' squares overflowed)",
    };

    private static string Text(double value) =>
        double.IsNaN(value) ? "NaN" : double.IsPositiveInfinity(value) ? "+inf" : double.IsNegativeInfinity(value) ? "-inf" : value.ToString("G6", System.Globalization.CultureInfo.InvariantCulture);
}

/// <summary>A step that updated nothing because a value was not finite (<see cref="TrainingOptions.SkipNonFiniteSteps"/>).</summary>
/// <param name="Value">What was not finite.</param>
/// <param name="Skipped">Steps skipped in the run so far, this one included.</param>
/// <param name="Allowed">Steps the run may skip in all.</param>
public sealed record SkippedStep(NonFiniteValue Value, int Skipped, int Allowed);

/// <summary>
/// What a training step does when its loss or gradient is not finite: continue when both are finite; skip the step
/// (it consumed its batch and advances the schedule, but updates nothing, as torch's GradScaler skips a step whose
/// gradients overflowed) while the run has skips left; otherwise stop. It only judges the values it is given, however
/// they were obtained (<see cref="GlobalNorm"/>).
/// </summary>
internal sealed class NonFinitePolicy
{
    /// <summary>What to do with a step.</summary>
    public enum Verdict
    {
        /// <summary>Everything is finite: update.</summary>
        Update,

        /// <summary>Something is not finite and the run may still skip: update nothing and go on.</summary>
        Skip,

        /// <summary>Something is not finite and no skip is left: update nothing and stop.</summary>
        Stop,
    }

    /// <param name="allowedSkips">Steps the whole run may skip (0: stop at the first non-finite value).</param>
    /// <param name="skippedSoFar">Steps already skipped before this process (a resumed run's count).</param>
    /// <exception cref="ArgumentOutOfRangeException">A count is negative.</exception>
    public NonFinitePolicy(int allowedSkips, int skippedSoFar = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(allowedSkips);
        ArgumentOutOfRangeException.ThrowIfNegative(skippedSoFar);
        AllowedSkips = allowedSkips;
        Skipped = skippedSoFar;
    }

    /// <summary>Steps the run may skip in all.</summary>
    public int AllowedSkips { get; }

    /// <summary>Steps skipped so far.</summary>
    public int Skipped { get; private set; }

    /// <summary>
    /// Judges one step: the loss first (a non-finite loss makes every gradient non-finite too, and is the cause to
    /// report), then the gradients' norm, naming the first parameter whose gradient is not finite.
    /// </summary>
    /// <param name="step">The step being judged (1-based).</param>
    /// <param name="loss">The step's loss as the host read it.</param>
    /// <param name="gradients">The gradients' global norm report.</param>
    /// <param name="parameterName">The name of the parameter at an index of the report.</param>
    /// <param name="value">What was not finite, or null for <see cref="Verdict.Update"/>.</param>
    public Verdict Judge(int step, double loss, NormReport gradients, Func<int, string> parameterName, out NonFiniteValue? value)
    {
        ArgumentNullException.ThrowIfNull(parameterName);
        value = !double.IsFinite(loss) ? new NonFiniteValue(step, NonFiniteQuantity.Loss, null, loss)
            : gradients.FirstNonFinite >= 0 ? new NonFiniteValue(step, NonFiniteQuantity.Gradient, parameterName(gradients.FirstNonFinite), gradients.FirstNonFiniteValue)
            : !gradients.IsFinite ? new NonFiniteValue(step, NonFiniteQuantity.GradientNorm, null, gradients.Norm)
            : null;
        if (value is null) return Verdict.Update;
        if (Skipped >= AllowedSkips) return Verdict.Stop;
        Skipped++;
        return Verdict.Skip;
    }
}
