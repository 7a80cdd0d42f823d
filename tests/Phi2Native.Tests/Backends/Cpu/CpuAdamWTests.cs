using NUnit.Framework;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Ops.Optimizer;
using Phi2Native.Tensors;

using static Phi2Native.Tests.Backends.Cpu.KernelCheck;
namespace Phi2Native.Tests.Backends.Cpu;

public class CpuAdamWTests
{
    /// <summary>torch 1.13 _single_tensor_adamw, one element at a time, in double.</summary>
    private static void Reference(double[] p, double[] g, double[] m, double[] v, AdamWStepArguments a)
    {
        double bc1 = 1 - Math.Pow(a.Beta1, a.Step), bc2 = 1 - Math.Pow(a.Beta2, a.Step);
        for (int i = 0; i < p.Length; i++)
        {
            p[i] *= 1 - a.LearningRate * a.WeightDecay;
            m[i] = a.Beta1 * m[i] + (1 - a.Beta1) * g[i];
            v[i] = a.Beta2 * v[i] + (1 - a.Beta2) * g[i] * g[i];
            p[i] -= a.LearningRate / bc1 * m[i] / (Math.Sqrt(v[i]) / Math.Sqrt(bc2) + a.Epsilon);
        }
    }

    [TestCase(37, 0.1)]
    [TestCase(1031, 0.0)]     // several scratch chunks plus a ragged tail; no weight decay
    [TestCase(100_003, 0.01)] // large enough to run multi-threaded
    public void ThreeSteps_MatchReference_FloatAndDouble(int n, double weightDecay)
    {
        double[] p = Random(n, seed: 80), m = new double[n], v = new double[n];
        float[] pf = ToFloat(p), mf = new float[n], vf = new float[n];
        double[] pd = (double[])p.Clone(), md = new double[n], vd = new double[n];
        for (int step = 1; step <= 3; step++)
        {
            double[] g = Random(n, seed: 80 + step, scale: 0.5);
            g[0] = 0; // a zero gradient: only eps keeps the update finite on step 1
            if (n > 2) g[1] = 1e-9;
            var arguments = new AdamWStepArguments(1e-2 * step, 0.9, 0.95, 1e-6, weightDecay, step);
            Reference(p, g, m, v, arguments);
            CpuAdamW.Step<double>(pd, g, md, vd, arguments);
            CpuAdamW.Step<float>(pf, ToFloat(g), mf, vf, arguments);
            AssertClose($"p after step {step}", pd, p, DoubleAtol, DoubleRtol);
            AssertClose($"exp_avg after step {step}", md, m, DoubleAtol, DoubleRtol);
            AssertClose($"exp_avg_sq after step {step}", vd, v, DoubleAtol, DoubleRtol);
            AssertClose($"p(float) after step {step}", pf, p);
            AssertClose($"exp_avg(float) after step {step}", mf, m);
            AssertClose($"exp_avg_sq(float) after step {step}", vf, v);
        }
    }

    [Test]
    public void FirstStep_MovesBySignTimesLearningRate_AfterDecay()
    {
        // Step 1: the bias-corrected moments are g and g^2, so the update is lr * g / (|g| + eps).
        double[] p = [1.0, -2.0, 0.5], g = [3.0, -0.25, 0.0], m = new double[3], v = new double[3];
        CpuAdamW.Step<double>(p, g, m, v, new AdamWStepArguments(0.1, 0.9, 0.999, 1e-8, 0.5, 1));
        double decay = 1 - 0.1 * 0.5;
        AssertClose("p", p, [decay * 1.0 - 0.1 * 3 / (3 + 1e-8), decay * -2.0 + 0.1 * 0.25 / (0.25 + 1e-8), decay * 0.5], DoubleAtol, DoubleRtol);
        AssertClose("exp_avg", m, [0.3, -0.025, 0], DoubleAtol, DoubleRtol);
        AssertClose("exp_avg_sq", v, [0.009, 0.0000625, 0], DoubleAtol, DoubleRtol);
    }

    [Test]
    public void ZeroLearningRate_LeavesParameterButUpdatesMoments()
    {
        float[] p = [1, 2, 3], g = [1, 1, 1], m = new float[3], v = new float[3];
        CpuAdamW.Step<float>(p, g, m, v, new AdamWStepArguments(0, 0.9, 0.999, 1e-8, 0.1, 1));
        Assert.That(p, Is.EqualTo(new float[] { 1, 2, 3 }).AsCollection);
        Assert.That(m, Is.EqualTo(new float[] { 0.1f, 0.1f, 0.1f }).Within(1e-7).AsCollection);
    }

    [Test]
    public void BadArguments_Throw()
    {
        float[] p = new float[4], g = new float[4], m = new float[4], v = new float[4];
        Assert.Throws<ArgumentOutOfRangeException>(() => CpuAdamW.Step<float>(p, g, m, v, new AdamWStepArguments(1e-3, 0.9, 0.999, 1e-8, 0, 0)));
        Assert.Throws<ArgumentOutOfRangeException>(() => CpuAdamW.Step<float>(p, g, m, v, new AdamWStepArguments(1e-3, 1.0, 0.999, 1e-8, 0, 1)));
        Assert.Throws<ArgumentOutOfRangeException>(() => CpuAdamW.Step<float>(p, g, m, v, new AdamWStepArguments(-1e-3, 0.9, 0.999, 1e-8, 0, 1)));
        Assert.Throws<ArgumentOutOfRangeException>(() => CpuAdamW.Step<float>(p, g, m, v, new AdamWStepArguments(double.NaN, 0.9, 0.999, 1e-8, 0, 1)));
        var ex = Assert.Throws<ArgumentException>(() => CpuAdamW.Step<float>(p, g, new float[3], v, new AdamWStepArguments(1e-3, 0.9, 0.999, 1e-8, 0, 1)));
        Assert.That(ex!.ParamName, Is.EqualTo("firstMoment"));
    }

    [Test]
    public void AClipScale_EqualsScalingTheGradientFirst()
    {
        float[] p0 = ToFloat(Random(700, seed: 5, scale: 1)), g = ToFloat(Random(700, seed: 6, scale: 0.3));
        float scale = 0.3712f;
        float[] p = (float[])p0.Clone(), m = new float[700], v = new float[700];
        CpuAdamW.Step<float>(p, g, m, v, new AdamWStepArguments(1e-2, 0.9, 0.999, 1e-8, 0.1, 1), scale);
        float[] q = (float[])p0.Clone(), mq = new float[700], vq = new float[700];
        CpuAdamW.Step<float>(q, g.Select(x => x * scale).ToArray(), mq, vq, new AdamWStepArguments(1e-2, 0.9, 0.999, 1e-8, 0.1, 1));
        Assert.That(p, Is.EqualTo(q).AsCollection, "p, bit for bit");
        Assert.That(m, Is.EqualTo(mq).AsCollection, "exp_avg, bit for bit");
        Assert.That(v, Is.EqualTo(vq).AsCollection, "exp_avg_sq, bit for bit");
    }

    [Test]
    public void TheOp_RejectsMismatchedDTypes()
    {
        var backend = new CpuBackend(poisonNewMemory: true);
        using var p = backend.Zeros([3, 5], DType.F32);
        using var g = backend.Zeros([15], DType.F32);
        using var m = backend.Zeros([3, 5], DType.F64);
        using var v = backend.Zeros([3, 5], DType.F32);
        var ex = Assert.Throws<ArgumentException>(() => AdamWOp.Step([new AdamWTensors(p, g, m, v, new AdamWStepArguments(1e-3, 0.9, 0.999, 1e-8, 0, 1))]));
        Assert.That(ex!.Message, Does.Contain("FirstMoment"));
    }
}
