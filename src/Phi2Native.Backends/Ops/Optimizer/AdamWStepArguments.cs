using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Optimizer;

/// <summary>
/// The scalars of one parameter's AdamW update (<see cref="AdamWOp"/>), with torch.optim.AdamW's meanings.
/// </summary>
/// <param name="LearningRate">The learning rate of this step (after the schedule), e.g. 2e-4.</param>
/// <param name="Beta1">Decay of the first moment (the running mean of gradients), e.g. 0.9.</param>
/// <param name="Beta2">Decay of the second moment (the running mean of squared gradients), e.g. 0.999.</param>
/// <param name="Epsilon">Added to the bias-corrected root of the second moment, e.g. 1e-8.</param>
/// <param name="WeightDecay">Decoupled weight decay: the parameter shrinks by LearningRate * WeightDecay first; 0 turns it off.</param>
/// <param name="Step">How many updates this parameter has had, this one included (1 for the first): the bias corrections use it.</param>
public readonly record struct AdamWStepArguments(double LearningRate, double Beta1, double Beta2, double Epsilon, double WeightDecay, int Step)
{
    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> for a value torch.optim.AdamW would reject, an infinite one, or a step below 1 (NaN fails every check).</summary>
    public void Validate()
    {
        if (!NumberChecks.IsFiniteNonNegative(LearningRate)) throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, "the learning rate must be a finite number >= 0");
        if (!(Beta1 >= 0 && Beta1 < 1)) throw new ArgumentOutOfRangeException(nameof(Beta1), Beta1, "beta1 must lie in [0, 1)");
        if (!(Beta2 >= 0 && Beta2 < 1)) throw new ArgumentOutOfRangeException(nameof(Beta2), Beta2, "beta2 must lie in [0, 1)");
        if (!NumberChecks.IsFiniteNonNegative(Epsilon)) throw new ArgumentOutOfRangeException(nameof(Epsilon), Epsilon, "epsilon must be a finite number >= 0");
        if (!NumberChecks.IsFiniteNonNegative(WeightDecay)) throw new ArgumentOutOfRangeException(nameof(WeightDecay), WeightDecay, "the weight decay must be a finite number >= 0");
        if (Step < 1) throw new ArgumentOutOfRangeException(nameof(Step), Step, "the step count is 1-based: 1 for the first update");
    }
}
