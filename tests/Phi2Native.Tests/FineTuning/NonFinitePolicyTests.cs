using System.Runtime.InteropServices;
using NUnit.Framework;
using Phi2Native.FineTuning.Optim;
using Phi2Native.FineTuning.Training;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.FineTuning;

/// <summary>
/// The non-finite check of a training step, apart from how its values are obtained: GlobalNorm measures the gradients'
/// norm and pins a NaN or infinity on the first parameter that holds one; NonFinitePolicy judges loss first, then that
/// parameter, then an overflowed norm, and counts skips against the run's allowance.
/// </summary>
[TestFixture]
public class NonFinitePolicyTests
{
    private static Tensor Parameter(string name, float[] gradient)
    {
        var backend = GradientCheck.Backend;
        var parameter = TensorScope.Detach(backend.FromBytes(MemoryMarshal.AsBytes(new float[gradient.Length].AsSpan()), DType.F32, [gradient.Length], DType.F32));
        parameter.Name = name;
        parameter.RequiresGrad = true;
        parameter.Grad = TensorScope.Detach(backend.FromBytes(MemoryMarshal.AsBytes(gradient.AsSpan()), DType.F32, [gradient.Length], DType.F32));
        return parameter;
    }

    [Test]
    public void TheNormNamesTheFirstParameterWhoseGradientIsNotFinite()
    {
        Tensor[] parameters = [Parameter("a", [3, 4]), Parameter("b", [1, float.PositiveInfinity]), Parameter("c", [float.NaN, 0])];
        try
        {
            var report = GlobalNorm.OfGradients(parameters);
            Assert.That(report.IsFinite, Is.False);
            Assert.That(report.FirstNonFinite, Is.EqualTo(1));
            Assert.That(report.FirstNonFiniteValue, Is.EqualTo(double.PositiveInfinity));

            var finite = GlobalNorm.OfGradients(parameters[..1]);
            Assert.That(finite.Norm, Is.EqualTo(5.0), "sqrt(3^2 + 4^2)");
            Assert.That(finite.FirstNonFinite, Is.EqualTo(-1));
            Assert.That(GradientClipping.ClipGradientsByGlobalNorm(parameters[..1], 1.0), Is.EqualTo(5.0), "clipping measures the same way");

            var policy = new NonFinitePolicy(allowedSkips: 0);
            Assert.That(policy.Judge(7, 2.5, report, i => parameters[i].Name!, out var value), Is.EqualTo(NonFinitePolicy.Verdict.Stop));
            Assert.That(value, Is.EqualTo(new NonFiniteValue(7, NonFiniteQuantity.Gradient, "b", double.PositiveInfinity)));
            Assert.That(value!.What, Is.EqualTo("the gradient of b is not finite (its sum of squares is +inf)"));
        }
        finally
        {
            foreach (var p in parameters) p.Dispose();
        }
    }

    [Test]
    public void TheLossIsJudgedFirstAndSkipsAreCountedAgainstTheRunsAllowance()
    {
        var fine = new NormReport(1.0, -1, double.NaN);
        var policy = new NonFinitePolicy(allowedSkips: 2, skippedSoFar: 1);   // one skipped before a resume
        Assert.That(policy.Judge(1, 0.5, fine, _ => "", out var none), Is.EqualTo(NonFinitePolicy.Verdict.Update));
        Assert.That(none, Is.Null);
        var badGradient = new NormReport(double.NaN, 0, double.NaN);
        Assert.That(policy.Judge(2, double.NaN, badGradient, _ => "x", out var loss), Is.EqualTo(NonFinitePolicy.Verdict.Skip));
        Assert.That(loss!.Quantity, Is.EqualTo(NonFiniteQuantity.Loss), "a NaN loss is the cause, whatever the gradients");
        Assert.That(loss.What, Is.EqualTo("the loss is NaN"));
        Assert.That(policy.Skipped, Is.EqualTo(2));
        var overflow = new NormReport(double.PositiveInfinity, -1, double.NaN);
        Assert.That(policy.Judge(3, 0.5, overflow, _ => "", out var norm), Is.EqualTo(NonFinitePolicy.Verdict.Stop), "the allowance is spent");
        Assert.That(norm!.Quantity, Is.EqualTo(NonFiniteQuantity.GradientNorm));
        Assert.That(() => new NonFinitePolicy(-1), Throws.InstanceOf<ArgumentOutOfRangeException>());
    }
}
