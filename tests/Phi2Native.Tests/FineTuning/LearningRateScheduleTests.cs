using NUnit.Framework;
using Phi2Native.FineTuning;
using Phi2Native.FineTuning.Optim;

namespace Phi2Native.Tests.FineTuning;

/// <summary>The schedules at their key steps, against values worked out from HF's lr_lambda formulas by hand.</summary>
public class LearningRateScheduleTests
{
    private const double Exact = 1e-15;

    [Test]
    public void CosineWithWarmup_KeySteps()
    {
        var schedule = LearningRateSchedule.CosineWithWarmup(warmupSteps: 10, trainingSteps: 110);
        Assert.Multiple(() =>
        {
            Assert.That(schedule.Factor(0), Is.EqualTo(0.0), "the first update runs at 0");
            Assert.That(schedule.Factor(5), Is.EqualTo(0.5).Within(Exact), "half way through warmup");
            Assert.That(schedule.Factor(10), Is.EqualTo(1.0).Within(Exact), "end of warmup: the peak");
            Assert.That(schedule.Factor(35), Is.EqualTo(0.5 * (1 + Math.Sqrt(0.5))).Within(Exact), "a quarter into decay: 0.5 (1 + cos(pi/4))");
            Assert.That(schedule.Factor(60), Is.EqualTo(0.5).Within(Exact), "middle of decay");
            Assert.That(schedule.Factor(110), Is.EqualTo(0.0).Within(Exact), "end of training");
            // HF clamps at 0 only: with half a cycle the cosine climbs again past the end.
            Assert.That(schedule.Factor(160), Is.EqualTo(0.5).Within(Exact), "past the end, as HF");
        });
    }

    [Test]
    public void CosineWithWarmup_MoreCycles()
    {
        // num_cycles 1: down to 0 half way, back up to 1 at the end.
        var schedule = LearningRateSchedule.CosineWithWarmup(warmupSteps: 0, trainingSteps: 8, numCycles: 1);
        Assert.That(new[] { schedule.Factor(0), schedule.Factor(4), schedule.Factor(8) }, Is.EqualTo(new[] { 1.0, 0.0, 1.0 }).Within(Exact).AsCollection);
    }

    [Test]
    public void LinearWithWarmup_KeySteps()
    {
        var schedule = LearningRateSchedule.LinearWithWarmup(warmupSteps: 4, trainingSteps: 12);
        Assert.Multiple(() =>
        {
            Assert.That(schedule.Factor(0), Is.EqualTo(0.0));
            Assert.That(schedule.Factor(1), Is.EqualTo(0.25).Within(Exact));
            Assert.That(schedule.Factor(4), Is.EqualTo(1.0).Within(Exact), "end of warmup");
            Assert.That(schedule.Factor(8), Is.EqualTo(0.5).Within(Exact), "middle of decay");
            Assert.That(schedule.Factor(11), Is.EqualTo(0.125).Within(Exact), "the last update");
            Assert.That(schedule.Factor(12), Is.EqualTo(0.0), "end of training");
            Assert.That(schedule.Factor(20), Is.EqualTo(0.0), "clamped at 0 past the end");
        });
    }

    [Test]
    public void ConstantWithWarmup_KeySteps()
    {
        var schedule = LearningRateSchedule.ConstantWithWarmup(warmupSteps: 3);
        Assert.That(new[] { schedule.Factor(0), schedule.Factor(1), schedule.Factor(2), schedule.Factor(3), schedule.Factor(1_000_000) },
            Is.EqualTo(new[] { 0.0, 1.0 / 3, 2.0 / 3, 1.0, 1.0 }).Within(Exact).AsCollection);
    }

    [Test]
    public void NoWarmup_StartsAtThePeak()
    {
        Assert.That(LearningRateSchedule.CosineWithWarmup(0, 10).Factor(0), Is.EqualTo(1.0));
        Assert.That(LearningRateSchedule.LinearWithWarmup(0, 10).Factor(0), Is.EqualTo(1.0));
        Assert.That(LearningRateSchedule.ConstantWithWarmup(0).Factor(0), Is.EqualTo(1.0));
        // HF's max(1, training - warmup): a run of no decay steps divides by 1, not by 0.
        Assert.That(LearningRateSchedule.LinearWithWarmup(5, 5).Factor(5), Is.EqualTo(0.0));
        Assert.That(LearningRateSchedule.CosineWithWarmup(5, 5).Factor(5), Is.EqualTo(1.0));
    }

    [Test]
    public void IsAPureValue()
    {
        Assert.That(LearningRateSchedule.CosineWithWarmup(2, 9), Is.EqualTo(LearningRateSchedule.CosineWithWarmup(2, 9)));
        Assert.That(LearningRateSchedule.CosineWithWarmup(2, 9).Factor(4), Is.EqualTo(LearningRateSchedule.CosineWithWarmup(2, 9).Factor(4)));
        Assert.That(LearningRateSchedule.LinearWithWarmup(2, 9), Is.Not.EqualTo(LearningRateSchedule.CosineWithWarmup(2, 9)));
    }

    [Test]
    public void BadArguments_Throw()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => LearningRateSchedule.ConstantWithWarmup(-1));
        Assert.Throws<ArgumentOutOfRangeException>(() => LearningRateSchedule.LinearWithWarmup(1, -1));
        Assert.Throws<ArgumentOutOfRangeException>(() => LearningRateSchedule.CosineWithWarmup(1, 10, double.NaN));
        Assert.Throws<ArgumentOutOfRangeException>(() => LearningRateSchedule.CosineWithWarmup(1, 10).Factor(-1));
    }
}
