using NUnit.Framework;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Ops.Attention;

using static Phi2Native.Tests.Backends.Cpu.KernelCheck;
namespace Phi2Native.Tests.Backends.Cpu;

public class CpuAttentionTests
{
    private const int B = 2, H = 3, D = 9;

    [TestCase(7, 7)]
    [TestCase(3, 7)]
    [TestCase(1, 7)]
    [TestCase(1, 1)]
    public void Forward_MatchesScoreMatrixReference_FloatAndDouble(int tq, int tk)
    {
        double[] q = Random(B * tq * H * D, 50), k = Random(B * tk * H * D, 51), v = Random(B * tk * H * D, 52);
        var (expected, expectedLse) = AttentionReference.Forward(q, k, v, B, tq, tk, H, D);
        var output = new double[expected.Length];
        var lse = new double[expectedLse.Length];
        CpuAttention.Forward<double>(q, k, v, output, lse, B, tq, tk, H, D);
        AssertClose("output", output, expected, DoubleAtol, DoubleRtol);
        AssertClose("logSumExp", lse, expectedLse, DoubleAtol, DoubleRtol);

        var outputF = new float[expected.Length];
        var lseF = new float[expectedLse.Length];
        CpuAttention.Forward<float>(ToFloat(q), ToFloat(k), ToFloat(v), outputF, lseF, B, tq, tk, H, D);
        AssertClose("output(float)", outputF, expected);
        AssertClose("logSumExp(float)", lseF, expectedLse);
    }

    [TestCase(7, 7)]
    [TestCase(3, 7)]
    public void Backward_MatchesFiniteDifferences_ForQKV(int tq, int tk)
    {
        double[] q = Random(B * tq * H * D, 53), k = Random(B * tk * H * D, 54), v = Random(B * tk * H * D, 55);
        double[] r = Random(B * tq * H * D, 56);
        var output = new double[r.Length];
        var lse = new double[B * H * tq];
        double Objective()
        {
            CpuAttention.Forward<double>(q, k, v, output, lse, B, tq, tk, H, D);
            return Dot(output, r);
        }
        Objective();
        // Garbage in the outputs: all three are overwritten, not accumulated.
        double[] dq = Random(q.Length, 57), dk = Random(k.Length, 58), dv = Random(v.Length, 59);
        CpuAttention.Backward<double>(r, q, k, v, output, lse, dq, dk, dv, B, tq, tk, H, D);
        CheckGradient("q", q, dq, Objective);
        CheckGradient("k", k, dk, Objective);
        CheckGradient("v", v, dv, Objective);
    }

    [Test]
    public void Backward_FloatMatchesDouble_ParallelSize_AndEachGradientIsSkippable()
    {
        const int b = 2, tq = 33, tk = 40, h = 4, d = 80;
        double[] q = Random(b * tq * h * d, 60), k = Random(b * tk * h * d, 61), v = Random(b * tk * h * d, 62);
        double[] dOut = Random(q.Length, 63);
        var output = new double[q.Length];
        var lse = new double[b * h * tq];
        CpuAttention.Forward<double>(q, k, v, output, lse, b, tq, tk, h, d);
        double[] dq = new double[q.Length], dk = new double[k.Length], dv = new double[v.Length];
        CpuAttention.Backward<double>(dOut, q, k, v, output, lse, dq, dk, dv, b, tq, tk, h, d);

        float[] qf = ToFloat(q), kf = ToFloat(k), vf = ToFloat(v), dOutF = ToFloat(dOut);
        var outputF = new float[q.Length];
        var lseF = new float[lse.Length];
        CpuAttention.Forward<float>(qf, kf, vf, outputF, lseF, b, tq, tk, h, d);
        AssertClose("output(float)", outputF, output);
        float[] dqf = new float[q.Length], dkf = new float[k.Length], dvf = new float[v.Length];
        CpuAttention.Backward<float>(dOutF, qf, kf, vf, outputF, lseF, dqf, dkf, dvf, b, tq, tk, h, d);
        AssertClose("dq(float)", dqf, dq, 1e-4, 1e-4);
        AssertClose("dk(float)", dkf, dk, 1e-4, 1e-4);
        AssertClose("dv(float)", dvf, dv, 1e-4, 1e-4);

        var only = new float[k.Length];
        CpuAttention.Backward<float>(dOutF, qf, kf, vf, outputF, lseF, [], only, [], b, tq, tk, h, d);
        Assert.That(only, Is.EqualTo(dkf).AsCollection, "dk alone");
        only = new float[v.Length];
        CpuAttention.Backward<float>(dOutF, qf, kf, vf, outputF, lseF, [], [], only, b, tq, tk, h, d);
        Assert.That(only, Is.EqualTo(dvf).AsCollection, "dv alone");
        only = new float[q.Length];
        CpuAttention.Backward<float>(dOutF, qf, kf, vf, outputF, lseF, only, [], [], b, tq, tk, h, d);
        Assert.That(only, Is.EqualTo(dqf).AsCollection, "dq alone");
    }

    [Test]
    public void LargeScores_StayFinite()
    {
        // |q|, |k| ~ 300 per element: scores ~ 1e5 / 3, far past exp's float range without the max.
        const int tq = 5, tk = 5;
        double[] q = Random(B * tq * H * D, 64, 300), k = Random(B * tk * H * D, 65, 300), v = Random(B * tk * H * D, 66);
        var (expected, expectedLse) = AttentionReference.Forward(q, k, v, B, tq, tk, H, D);
        Assert.That(expectedLse.Max(Math.Abs), Is.GreaterThan(1e3), "the test really has large scores");
        var outputF = new float[expected.Length];
        var lseF = new float[expectedLse.Length];
        float[] qf = ToFloat(q), kf = ToFloat(k), vf = ToFloat(v);
        CpuAttention.Forward<float>(qf, kf, vf, outputF, lseF, B, tq, tk, H, D);
        Assert.That(outputF.All(float.IsFinite) && lseF.All(float.IsFinite), Is.True);
        // The scores themselves round to ~1e-3 in float, so compare loosely.
        AssertClose("output(float)", outputF, expected, 1e-2, 1e-2);
        AssertClose("logSumExp(float)", lseF, expectedLse, 1e-2, 1e-4);

        float[] dq = new float[q.Length], dk = new float[k.Length], dv = new float[v.Length];
        CpuAttention.Backward<float>(ToFloat(Random(q.Length, 67)), qf, kf, vf, outputF, lseF, dq, dk, dv, B, tq, tk, H, D);
        Assert.That(dq.All(float.IsFinite) && dk.All(float.IsFinite) && dv.All(float.IsFinite), Is.True);
    }

    [Test]
    public void BadDims_Throw()
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => CpuAttention.Forward<float>(
            new float[B * 4 * H * D], new float[B * 3 * H * D], new float[B * 3 * H * D], new float[B * 4 * H * D],
            new float[B * H * 4], B, 4, 3, H, D));
        Assert.That(ex!.ParamName, Is.EqualTo("keyTime"));
        var ex2 = Assert.Throws<ArgumentException>(() => CpuAttention.Forward<float>(
            new float[B * 4 * H * D], new float[B * 4 * H * D], new float[B * 4 * H * D], new float[B * 4 * H * D],
            new float[B * H * 4 + 1], B, 4, 4, H, D));
        Assert.That(ex2!.ParamName, Is.EqualTo("logSumExp"));
    }
}
