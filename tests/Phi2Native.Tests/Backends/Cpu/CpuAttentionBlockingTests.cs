// The edges of CpuAttention's blocked schedule: query blocks that do not divide T, a block's masked
// triangle when queries start at Tk - Tq > 0 (the KV-cache case), and both threading paths (pairs in
// parallel with single-threaded products, or products that CpuGemm splits over the threads).
using NUnit.Framework;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Ops.Attention;

using static Phi2Native.Tests.Backends.Cpu.KernelCheck;
namespace Phi2Native.Tests.Backends.Cpu;

public class CpuAttentionBlockingTests
{
    private const int B = 2, H = 2, D = 9;

    // (Tq, Tk, query rows per block): T = 1, 7, 129, 300 with blocks that leave a short last block;
    // then Tq < Tk, where every block sees keys beyond its own rows and the boundaries fall mid-way.
    // Forward blocks of <= CpuAttention.DirectRows rows take the dot-product path, larger ones the
    // products: (7, 7, 1), (5, 300, 2) and the 1-row calls are all direct, (130, 130, 128) mixes both.
    [TestCase(1, 1, 4)]
    [TestCase(7, 7, 4)]
    [TestCase(7, 7, 1)]
    [TestCase(129, 129, 16)]
    [TestCase(300, 300, 32)]
    [TestCase(300, 300, 7)]
    [TestCase(37, 100, 8)]
    [TestCase(5, 300, 2)]
    [TestCase(1, 129, 4)]
    [TestCase(130, 131, 64)]
    [TestCase(130, 130, 128)]
    [TestCase(20, 40_000, 128)] // long keys cap the block at 2^18 / Tk -> 8 rows: 8 + 8 + 4
    public void SmallBlocks_MatchReference_BothThreadingPaths(int tq, int tk, int block)
    {
        double[] q = Random(B * tq * H * D, 70), k = Random(B * tk * H * D, 71), v = Random(B * tk * H * D, 72);
        double[] dOut = Random(B * tq * H * D, 73);
        var (expected, expectedLse) = AttentionReference.Forward(q, k, v, B, tq, tk, H, D);
        var (expectedDq, expectedDk, expectedDv) = AttentionReference.Backward(dOut, q, k, v, B, tq, tk, H, D);

        foreach (var parallelism in new[] { AttentionParallelism.Pairs, AttentionParallelism.Gemm })
        {
            string tag = $"block {block}, {parallelism}";
            var output = new double[q.Length];
            var lse = new double[B * H * tq];
            CpuAttention.Forward<double>(q, k, v, output, lse, B, tq, tk, H, D, block, parallelism);
            AssertClose($"output ({tag})", output, expected, DoubleAtol, DoubleRtol);
            AssertClose($"logSumExp ({tag})", lse, expectedLse, DoubleAtol, DoubleRtol);

            // Garbage in the gradients: they are overwritten. The backward's block need not be the forward's.
            double[] dq = Random(q.Length, 74), dk = Random(k.Length, 75), dv = Random(v.Length, 76);
            CpuAttention.Backward<double>(dOut, q, k, v, output, lse, dq, dk, dv, B, tq, tk, H, D, block + 1, parallelism);
            AssertClose($"dq ({tag})", dq, expectedDq, DoubleAtol, DoubleRtol);
            AssertClose($"dk ({tag})", dk, expectedDk, DoubleAtol, DoubleRtol);
            AssertClose($"dv ({tag})", dv, expectedDv, DoubleAtol, DoubleRtol);
        }
    }

    [Test]
    public void Reference_AgreesWithFiniteDifferences()
    {
        // The reference backward stands in for finite differences above, so it is checked against them once.
        const int tq = 3, tk = 5;
        double[] q = Random(B * tq * H * D, 77), k = Random(B * tk * H * D, 78), v = Random(B * tk * H * D, 79);
        double[] r = Random(B * tq * H * D, 80);
        double Objective() => Dot(AttentionReference.Forward(q, k, v, B, tq, tk, H, D).Output, r);
        var (dq, dk, dv) = AttentionReference.Backward(r, q, k, v, B, tq, tk, H, D);
        CheckGradient("q", q, dq, Objective);
        CheckGradient("k", k, dk, Objective);
        CheckGradient("v", v, dv, Objective);
    }

    // Phi-2's head dim and blocks of the default size: the scores of a block, [128, T] over D = 80, are above
    // CpuGemm's 2^22-flop threshold, so in the Gemm path each product is split over the threads.
    [TestCase(520, 520)]
    [TestCase(200, 650)]
    public void LongSequence_ThreadedProducts_MatchPairParallel_BitForBit_AndReference(int tq, int tk)
    {
        const int b = 1, h = 2, d = 80;
        Assert.That(2L * CpuAttention.DefaultQueryBlock(tq) * tk * d, Is.GreaterThanOrEqualTo(CpuGemm.ParallelFlopThreshold),
            "the products are large enough for CpuGemm to use threads");
        double[] q = Random(b * tq * h * d, 81), k = Random(b * tk * h * d, 82), v = Random(b * tk * h * d, 83);
        double[] dOut = Random(q.Length, 84);
        float[] qf = ToFloat(q), kf = ToFloat(k), vf = ToFloat(v), dOutF = ToFloat(dOut);

        (float[] O, float[] Lse, float[] Dq, float[] Dk, float[] Dv) Run(AttentionParallelism parallelism)
        {
            var output = new float[q.Length];
            var lse = new float[b * h * tq];
            CpuAttention.Forward<float>(qf, kf, vf, output, lse, b, tq, tk, h, d, CpuAttention.DefaultQueryBlock(tq), parallelism);
            float[] dq = new float[q.Length], dk = new float[k.Length], dv = new float[v.Length];
            CpuAttention.Backward<float>(dOutF, qf, kf, vf, output, lse, dq, dk, dv, b, tq, tk, h, d,
                CpuAttention.DefaultQueryBlock(tq), parallelism);
            return (output, lse, dq, dk, dv);
        }

        var threaded = Run(AttentionParallelism.Gemm);
        var pairs = Run(AttentionParallelism.Pairs);
        // Each element is one fixed sequence of operations whichever thread computes it (see CpuAttention's header).
        Assert.That(threaded.O, Is.EqualTo(pairs.O).AsCollection, "output");
        Assert.That(threaded.Lse, Is.EqualTo(pairs.Lse).AsCollection, "logSumExp");
        Assert.That(threaded.Dq, Is.EqualTo(pairs.Dq).AsCollection, "dq");
        Assert.That(threaded.Dk, Is.EqualTo(pairs.Dk).AsCollection, "dk");
        Assert.That(threaded.Dv, Is.EqualTo(pairs.Dv).AsCollection, "dv");
        var again = Run(AttentionParallelism.Auto);
        Assert.That(again.Dk, Is.EqualTo(pairs.Dk).AsCollection, "dk (Auto)");

        var (expected, expectedLse) = AttentionReference.Forward(q, k, v, b, tq, tk, h, d);
        var (expectedDq, expectedDk, expectedDv) = AttentionReference.Backward(dOut, q, k, v, b, tq, tk, h, d);
        AssertClose("output(float)", threaded.O, expected);
        AssertClose("logSumExp(float)", threaded.Lse, expectedLse);
        AssertClose("dq(float)", threaded.Dq, expectedDq, 1e-4, 1e-4);
        AssertClose("dk(float)", threaded.Dk, expectedDk, 1e-4, 1e-4);
        AssertClose("dv(float)", threaded.Dv, expectedDv, 1e-4, 1e-4);
    }

    [Test]
    public void BadQueryBlock_Throws()
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => CpuAttention.Forward<float>(
            new float[4], new float[4], new float[4], new float[4], new float[1], 1, 1, 1, 1, 4, 0, AttentionParallelism.Auto));
        Assert.That(ex!.ParamName, Is.EqualTo("queryBlock"));
    }
}
