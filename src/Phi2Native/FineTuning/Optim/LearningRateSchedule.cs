namespace Phi2Native.FineTuning.Optim;

/// <summary>What the learning rate does after warmup.</summary>
public enum LearningRateDecay
{
    /// <summary>Stays at the base rate (HF <c>get_constant_schedule_with_warmup</c>).</summary>
    Constant,

    /// <summary>Falls linearly to 0 at the last training step (HF <c>get_linear_schedule_with_warmup</c>).</summary>
    Linear,

    /// <summary>Follows a cosine down to 0 at the last training step (HF <c>get_cosine_schedule_with_warmup</c>).</summary>
    Cosine,
}

/// <summary>
/// A learning-rate multiplier as a pure function of the step: linear warmup from 0, then constant, linear or cosine decay,
/// with exactly the formulas of HF transformers' <c>get_*_schedule_with_warmup</c> (their <c>lr_lambda</c>).
/// </summary>
/// <remarks>
/// The step is the number of optimizer updates done before the one about to run (torch's LambdaLR: the first update
/// uses <c>Factor(0)</c>, which is 0 when there is warmup). So a resumed run needs only the step count to continue
/// the schedule exactly. Past <see cref="TrainingSteps"/> the decays do what HF's do: linear stays at 0, cosine with
/// the default half cycle rises again (HF clamps only at 0), so a trainer should stop at <see cref="TrainingSteps"/>.
/// </remarks>
public sealed record LearningRateSchedule
{
    private LearningRateSchedule(LearningRateDecay decay, int warmupSteps, int trainingSteps, double numCycles)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(warmupSteps);
        ArgumentOutOfRangeException.ThrowIfNegative(trainingSteps);
        if (!double.IsFinite(numCycles)) throw new ArgumentOutOfRangeException(nameof(numCycles), numCycles, "the number of cosine cycles must be finite");
        Decay = decay;
        WarmupSteps = warmupSteps;
        TrainingSteps = trainingSteps;
        NumCycles = numCycles;
    }

    /// <summary>The decay after warmup.</summary>
    public LearningRateDecay Decay { get; }

    /// <summary>Steps over which the factor rises linearly from 0 (at step 0) to 1 (at this step).</summary>
    public int WarmupSteps { get; }

    /// <summary>The step at which linear and cosine decay reach 0 (0 for <see cref="LearningRateDecay.Constant"/>, which has no end).</summary>
    public int TrainingSteps { get; }

    /// <summary>Cosine waves over the decay: 0.5 (HF's default) goes from 1 down to 0 once. Unused by the other decays.</summary>
    public double NumCycles { get; }

    /// <summary>Warmup, then the base learning rate (HF <c>get_constant_schedule_with_warmup</c>).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="warmupSteps"/> is negative.</exception>
    public static LearningRateSchedule ConstantWithWarmup(int warmupSteps) => new(LearningRateDecay.Constant, warmupSteps, 0, 0.5);

    /// <summary>Warmup, then linear decay to 0 at <paramref name="trainingSteps"/> (HF <c>get_linear_schedule_with_warmup</c>).</summary>
    /// <exception cref="ArgumentOutOfRangeException">A negative step count.</exception>
    public static LearningRateSchedule LinearWithWarmup(int warmupSteps, int trainingSteps) => new(LearningRateDecay.Linear, warmupSteps, trainingSteps, 0.5);

    /// <summary>Warmup, then cosine decay to 0 at <paramref name="trainingSteps"/> (HF <c>get_cosine_schedule_with_warmup</c>).</summary>
    /// <exception cref="ArgumentOutOfRangeException">A negative step count, or a non-finite <paramref name="numCycles"/>.</exception>
    public static LearningRateSchedule CosineWithWarmup(int warmupSteps, int trainingSteps, double numCycles = 0.5) =>
        new(LearningRateDecay.Cosine, warmupSteps, trainingSteps, numCycles);

    /// <summary>The multiplier of the base learning rate for the update that follows <paramref name="step"/> completed ones.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="step"/> is negative.</exception>
    public double Factor(int step)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(step);
        // Integer max(1, ...) before the division, as HF writes it: a warmup of 0 divides by 1, not by 0.
        if (step < WarmupSteps) return (double)step / Math.Max(1, WarmupSteps);
        double afterWarmup = step - WarmupSteps, decaySteps = Math.Max(1, TrainingSteps - WarmupSteps);
        return Decay switch
        {
            LearningRateDecay.Constant => 1.0,
            LearningRateDecay.Linear => Math.Max(0.0, (TrainingSteps - step) / decaySteps),
            _ => Math.Max(0.0, 0.5 * (1.0 + Math.Cos(Math.PI * NumCycles * 2.0 * (afterWarmup / decaySteps)))),
        };
    }
}
