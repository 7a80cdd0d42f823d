using System.Runtime.InteropServices;
using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Loss;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.DeviceChecks;

/// <summary>
/// kernels/cross_entropy.cu through <see cref="CrossEntropyKernels"/>, against the CPU backend's CrossEntropy and
/// CrossEntropyBackward on the same widened logits: the saved log-sum-exp, the per-row loss, the total, the counted
/// rows and the mean (CrossEntropyOp's ScaleInPlace by 1 / counted), and dLogits. Targets sit at both ends of the
/// vocabulary and in between, with ignored rows (-100) among them; vocabularies are odd and narrower than a warp;
/// logits have rows offset far from zero, masked (-Inf) entries, and rows of only ignored targets. Backward runs on
/// the lse the device's own forward saved, as training does. The total is also checked alone on the CPU's own lse,
/// where it must equal the CPU's bit for bit.
/// </summary>
public static class CrossEntropyChecks
{
    private const int Ignore = CrossEntropyKernels.DefaultIgnoreIndex;

    /// <summary>How a check's targets are laid out.</summary>
    private enum Targets
    {
        /// <summary>0, V - 1, ignored, then every third row ignored and the rest seeded ids.</summary>
        Mixed,

        /// <summary>Every row ignored: nothing counts.</summary>
        AllIgnored,
    }

    /// <summary>The checks of this family.</summary>
    public static IReadOnlyList<DeviceCheck> All { get; } =
    [
        Forward(DType.F32, 7, 1003),
        Forward(DType.F32, 5, 7),
        Forward(DType.F32, 3, 4099),
        Forward(DType.BF16, 7, 1003),
        Forward(DType.BF16, 5, 7),
        Forward(DType.F32, 4, 1003, Targets.AllIgnored),
        Forward(DType.F32, 6, 333, large: true),
        Forward(DType.BF16, 6, 333, large: true),
        Total(DType.F32, 300, 61),
        Total(DType.BF16, 7, 1003),
        Total(DType.F32, 4, 61, Targets.AllIgnored),
        Backward(DType.F32, 7, 1003, dLoss: 0),
        Backward(DType.F32, 7, 1003, dLoss: 1f),
        Backward(DType.F32, 5, 7, dLoss: 0.37f),
        Backward(DType.F32, 3, 4099, dLoss: 0),
        Backward(DType.BF16, 7, 1003, dLoss: 0),
        Backward(DType.BF16, 5, 7, dLoss: 2.5f),
        Backward(DType.F32, 4, 1003, dLoss: 0.25f, targets: Targets.AllIgnored),
        Backward(DType.F32, 6, 333, dLoss: 0, large: true),
        Backward(DType.F32, 7, 1003, dLoss: 0, inPlace: true),
        Backward(DType.BF16, 5, 257, dLoss: 0, inPlace: true),
        Chunk(DType.F32, 7, 1003, wholeCount: 9),
        Chunk(DType.BF16, 7, 1003, wholeCount: 9),
        Chunk(DType.F32, 5, 7, wholeCount: 3),
        Chunk(DType.F32, 6, 333, wholeCount: 40, large: true),
        Chunk(DType.BF16, 4, 61, wholeCount: 12, targets: Targets.AllIgnored),
        PickedTotal(300, 61),
        PickedTotal(4, 61, Targets.AllIgnored),
    ];

    private static string Suffix(DType dtype) => KernelName.Suffix(dtype);

    private static string Describe(int rows, int vocab, Targets targets, bool large) =>
        $"[{rows}, {vocab}]{(targets == Targets.AllIgnored ? " all rows ignored" : "")}{(large ? " logits +-100 with masked entries" : "")}";

    private static DeviceCheck Forward(DType dtype, int rows, int vocab, Targets targets = Targets.Mixed, bool large = false) =>
        new($"cross_entropy_{Suffix(dtype)} {Describe(rows, vocab, targets, large)}",
            [$"cross_entropy_{Suffix(dtype)}", $"cross_entropy_sum_{Suffix(dtype)}"],
            device => RunForward(device, dtype, rows, vocab, targets, large));

    private static DeviceCheck Total(DType dtype, int rows, int vocab, Targets targets = Targets.Mixed) =>
        new($"cross_entropy_sum_{Suffix(dtype)} {Describe(rows, vocab, targets, false)} on the CPU's lse, bit for bit",
            [$"cross_entropy_sum_{Suffix(dtype)}"],
            device => RunTotal(device, dtype, rows, vocab, targets));

    /// <summary>A backward check with the loss's gradient dLoss read on the device; 0 stands for none (1).</summary>
    private static DeviceCheck Backward(DType dtype, int rows, int vocab, float dLoss, Targets targets = Targets.Mixed, bool large = false,
        bool inPlace = false) =>
        new($"cross_entropy_backward_{Suffix(dtype)} {Describe(rows, vocab, targets, large)} dLoss {(dLoss == 0 ? "none" : dLoss.ToString("R"))}{(inPlace ? " in place" : "")}",
            [$"cross_entropy_{Suffix(dtype)}", $"cross_entropy_backward_{Suffix(dtype)}"],
            device => RunBackward(device, dtype, rows, vocab, dLoss, targets, large, inPlace));

    /// <summary>
    /// cross_entropy_chunk over one chunk of a loss that counts <paramref name="wholeCount"/> rows in all (the chunk's
    /// own count or more: other chunks count too); all ignored: a chunk that scores nothing still runs.
    /// </summary>
    private static DeviceCheck Chunk(DType dtype, int rows, int vocab, int wholeCount, Targets targets = Targets.Mixed, bool large = false) =>
        new($"cross_entropy_chunk_{Suffix(dtype)} {Describe(rows, vocab, targets, large)} of a loss counting {wholeCount}",
            [$"cross_entropy_chunk_{Suffix(dtype)}"],
            device => RunChunk(device, dtype, rows, vocab, wholeCount, targets, large));

    private static DeviceCheck PickedTotal(int rows, int vocab, Targets targets = Targets.Mixed) =>
        new($"cross_entropy_picked_sum {Describe(rows, vocab, targets, false)} on the CPU's lse, bit for bit",
            ["cross_entropy_picked_sum"],
            device => RunPickedTotal(device, rows, vocab, targets));

    // Seeded by shape. Rows are offset from one another by up to +-12 (the max subtraction matters, and lse stays
    // small enough that fp32 rounding of lse, which both sides save, moves exp(x - lse) by a few parts in 10^6).
    // "large" rows sit near +100 and -100 (exp(100) overflows fp32: without the max subtraction the row is lost; still
    // small enough that one ulp of lse, 8e-6, stays inside the tolerances) and mask every fifth entry with -Inf, as a
    // vocabulary restriction would; the targets there are never masked entries.
    private static float[] MakeLogits(int rows, int vocab, bool large)
    {
        float[] x = TestData.Uniform(rows * vocab, seed: 700 + vocab, scale: 4f);
        for (int r = 0; r < rows; r++)
        {
            float offset = large ? (r % 2 == 0 ? 100f : -100f) : 12f * ((r % 5) - 2) / 2f;
            for (int v = 0; v < vocab; v++)
            {
                int i = r * vocab + v;
                x[i] = large && v % 5 == 3 ? float.NegativeInfinity : x[i] + offset;
            }
        }
        return x;
    }

    private static int[] MakeTargets(int rows, int vocab, Targets layout, bool large)
    {
        var random = new Random(800 + vocab);
        var targets = new int[rows];
        for (int r = 0; r < rows; r++)
        {
            int t = layout == Targets.AllIgnored ? Ignore
                : r == 0 ? 0
                : r == 1 ? vocab - 1
                : r == 2 || r % 3 == 0 ? Ignore
                : random.Next(vocab);
            if (large && t != Ignore && t % 5 == 3) t--; // never a masked (-Inf) entry: that row's loss would be +Inf
            targets[r] = t;
        }
        return targets;
    }

    private sealed class CpuSide : IDisposable
    {
        public required CpuReference Cpu { get; init; }
        public required Tensor Logits { get; init; }
        public required Tensor Targets { get; init; }

        /// <summary>The CPU's per-row lse, the loss sum (the double sum in row order, rounded once) and the count.</summary>
        public (float[] Lse, float Sum, int Counted) Loss(int rows, int vocab)
        {
            var lse = new float[rows];
            var (sum, counted) = CpuCrossEntropy.Forward<float>(Logits.ToArray<float>(), Targets.ToArray<int>(), lse, rows, vocab, Ignore);
            return (lse, (float)sum, counted);
        }

        public void Dispose()
        {
            Logits.Dispose();
            Targets.Dispose();
            Cpu.Dispose();
        }
    }

    private static CpuSide OnCpu(DType dtype, float[] logits, int[] targets, int rows, int vocab)
    {
        var cpu = new CpuReference();
        return new CpuSide
        {
            Cpu = cpu,
            Logits = cpu.Stored(dtype, logits, rows, vocab),
            Targets = cpu.Backend.FromBytes(MemoryMarshal.AsBytes(targets.AsSpan()), DType.I32, [rows], DType.I32),
        };
    }

    /// <summary>The per-row loss as the kernel defines it, from the CPU's lse: lse - logit of the target, 0 when ignored.</summary>
    private static float[] RowLoss(float[] lse, float[] storedLogits, int[] targets, int vocab) =>
        [.. targets.Select((t, r) => t == Ignore ? 0f : lse[r] - storedLogits[r * vocab + t])];

    /// <summary>CrossEntropyOp's mean: the sum, scaled by (float)(1.0 / counted) when anything counted.</summary>
    private static float Mean(float sum, int counted) => counted > 0 ? sum * (float)(1.0 / counted) : sum;

    private static CheckResult CompareCount(int actual, int expected) =>
        actual == expected
            ? new CheckResult(0, 0, $"counted: {actual}")
            : new CheckResult(Math.Abs(actual - expected), double.PositiveInfinity, $"counted = {actual}, expected {expected}");

    private static CheckResult RunForward(IDeviceApi device, DType dtype, int rows, int vocab, Targets layout, bool large)
    {
        float[] logits = MakeLogits(rows, vocab, large);
        int[] targets = MakeTargets(rows, vocab, layout, large);
        using var dLogits = DeviceBuffer.Upload(device, dtype, logits);
        using var dTargets = DeviceBuffer.Upload(device, targets);
        using var lse = DeviceBuffer.Allocate(device, DType.F32, rows);
        using var loss = DeviceBuffer.Allocate(device, DType.F32, rows);
        using var sum = DeviceBuffer.Allocate(device, DType.F32, 1);
        using var mean = DeviceBuffer.Allocate(device, DType.F32, 1);
        using var counted = DeviceBuffer.Allocate(device, DType.I32, 1);
        CrossEntropyKernels.CrossEntropy(device, dtype, dLogits.Pointer, dTargets.Pointer, lse.Pointer, loss.Pointer, rows, vocab);
        CrossEntropyKernels.CrossEntropySum(device, dtype, dLogits.Pointer, dTargets.Pointer, lse.Pointer, sum.Pointer, mean.Pointer,
            counted.Pointer, rows, vocab);

        using var cpu = OnCpu(dtype, logits, targets, rows, vocab);
        var (expectedLse, expectedSum, cCounted) = cpu.Loss(rows, vocab);
        {
            // The loss sums terms near 10 over rows: fp32 lse differences of a few ulps each add up, relative to the sum.
            var tolerance = Tolerances.Forward(DType.F32);
            return CheckResult.Combine(
                tolerance.Compare("lse", lse.Download(), expectedLse),
                tolerance.Compare("loss", loss.Download(), RowLoss(expectedLse, CpuReference.RoundTrip(dtype, logits), targets, vocab)),
                tolerance.Compare("lossSum", sum.Download(), [expectedSum]),
                tolerance.Compare("lossMean", mean.Download(), [Mean(expectedSum, cCounted)]),
                CompareCount(counted.DownloadInt32()[0], cCounted));
        }
    }

    // The total alone, fed the CPU's own lse: the same terms added in the same order in double, so the sum, the mean
    // and the count must equal the CPU's bit for bit. 300 rows span two tiles of the sum kernel's block.
    private static CheckResult RunTotal(IDeviceApi device, DType dtype, int rows, int vocab, Targets layout)
    {
        float[] logits = MakeLogits(rows, vocab, large: false);
        int[] targets = MakeTargets(rows, vocab, layout, large: false);
        using var cpu = OnCpu(dtype, logits, targets, rows, vocab);
        var (expectedLse, expectedSum, cCounted) = cpu.Loss(rows, vocab);

        using var dLogits = DeviceBuffer.Upload(device, dtype, logits);
        using var dTargets = DeviceBuffer.Upload(device, targets);
        using var lse = DeviceBuffer.Upload(device, DType.F32, expectedLse);
        using var sum = DeviceBuffer.Allocate(device, DType.F32, 1);
        using var mean = DeviceBuffer.Allocate(device, DType.F32, 1);
        using var counted = DeviceBuffer.Allocate(device, DType.I32, 1);
        CrossEntropyKernels.CrossEntropySum(device, dtype, dLogits.Pointer, dTargets.Pointer, lse.Pointer, sum.Pointer, mean.Pointer,
            counted.Pointer, rows, vocab);
        return CheckResult.Combine(
            CheckResult.CompareBits("lossSum", sum.Download(), [expectedSum]),
            CheckResult.CompareBits("lossMean", mean.Download(), [Mean(expectedSum, cCounted)]),
            CompareCount(counted.DownloadInt32()[0], cCounted));
    }

    private static CheckResult RunBackward(IDeviceApi device, DType dtype, int rows, int vocab, float dLoss, Targets layout, bool large, bool inPlace)
    {
        float[] logits = MakeLogits(rows, vocab, large);
        int[] targets = MakeTargets(rows, vocab, layout, large);
        int counted = targets.Count(t => t != Ignore);
        // The kernel's scale: (float)(1 / counted) times dLoss in fp32, 0 when nothing counts.
        double s = counted == 0 ? 0 : (float)(1.0 / counted) * (dLoss == 0 ? 1f : dLoss);

        using var dLogits = DeviceBuffer.Upload(device, dtype, logits);
        using var dTargets = DeviceBuffer.Upload(device, targets);
        using var dCounted = DeviceBuffer.Upload(device, [counted]);
        using var dLossBuffer = dLoss == 0 ? null : DeviceBuffer.Upload(device, DType.F32, [dLoss]);
        using var lse = DeviceBuffer.Allocate(device, DType.F32, rows);
        using var gradient = inPlace ? null : DeviceBuffer.Allocate(device, dtype, (long)rows * vocab);
        CrossEntropyKernels.CrossEntropy(device, dtype, dLogits.Pointer, dTargets.Pointer, lse.Pointer, DevicePtr.Null, rows, vocab);
        var output = gradient ?? dLogits;
        CrossEntropyKernels.CrossEntropyBackward(device, dtype, dLogits.Pointer, dTargets.Pointer, lse.Pointer, dCounted.Pointer,
            dLossBuffer?.Pointer ?? DevicePtr.Null, output.Pointer, rows, vocab);

        using var cpu = OnCpu(dtype, logits, targets, rows, vocab);
        using var cMean = CrossEntropyOp.Forward(cpu.Logits, cpu.Targets, Ignore, out var cLse, out var cCounted);
        using var cDLoss = dLoss == 0 ? null : cpu.Cpu.Backend.FromBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(new[] { dLoss }.AsSpan()),
            DType.F32, [1], DType.F32);
        using var cGradient = cpu.Cpu.Backend.Empty([rows, vocab], DType.F32);
        using (cLse)
        using (cCounted)
        {
            CrossEntropyOp.Backward(cpu.Logits, cpu.Targets, cLse, cCounted, cDLoss, Ignore, cGradient);
            return Tolerances.CrossEntropyGradient(dtype, s).Compare("dLogits", output.Download(), cpu.Cpu.CastTo(dtype, cGradient));
        }
    }

    // The chunk's lse, target logits and in-place gradient against the CPU's lse and CrossEntropyBackward with scale
    // (float)(1 / wholeCount): the scale of the whole loss, not of the chunk.
    private static CheckResult RunChunk(IDeviceApi device, DType dtype, int rows, int vocab, int wholeCount, Targets layout, bool large)
    {
        float[] logits = MakeLogits(rows, vocab, large);
        int[] targets = MakeTargets(rows, vocab, layout, large);
        using var dLogits = DeviceBuffer.Upload(device, dtype, logits);
        using var dTargets = DeviceBuffer.Upload(device, targets);
        using var lse = DeviceBuffer.Allocate(device, DType.F32, rows);
        using var picked = DeviceBuffer.Allocate(device, DType.F32, rows);
        CrossEntropyKernels.CrossEntropyChunk(device, dtype, dLogits.Pointer, dTargets.Pointer, lse.Pointer, picked.Pointer, wholeCount, rows, vocab);

        using var cpu = OnCpu(dtype, logits, targets, rows, vocab);
        var (expectedLse, _, _) = cpu.Loss(rows, vocab);
        float[] stored = CpuReference.RoundTrip(dtype, logits);
        float scale = (float)(1.0 / wholeCount);
        var gradient = new float[rows * vocab];
        CpuCrossEntropy.Backward<float>(stored, targets, expectedLse, scale, gradient, rows, vocab, Ignore);
        return CheckResult.Combine(
            Tolerances.Forward(DType.F32).Compare("lse", lse.Download(), expectedLse),
            CheckResult.CompareBits("picked", picked.Download(), [.. targets.Select((t, r) => t == Ignore ? 0f : stored[r * vocab + t])]),
            Tolerances.CrossEntropyGradient(dtype, scale).Compare("dLogits", dLogits.Download(), CpuReference.RoundTrip(dtype, gradient)));
    }

    // The total over gathered target logits, fed the CPU's lse: the CPU's sum, mean and count bit for bit.
    private static CheckResult RunPickedTotal(IDeviceApi device, int rows, int vocab, Targets layout)
    {
        float[] logits = MakeLogits(rows, vocab, large: false);
        int[] targets = MakeTargets(rows, vocab, layout, large: false);
        using var cpu = OnCpu(DType.F32, logits, targets, rows, vocab);
        var (expectedLse, expectedSum, cCounted) = cpu.Loss(rows, vocab);
        float[] pickedLogits = [.. targets.Select((t, r) => t == Ignore ? 0f : logits[r * vocab + t])];

        using var dPicked = DeviceBuffer.Upload(device, DType.F32, pickedLogits);
        using var dTargets = DeviceBuffer.Upload(device, targets);
        using var lse = DeviceBuffer.Upload(device, DType.F32, expectedLse);
        using var sum = DeviceBuffer.Allocate(device, DType.F32, 1);
        using var mean = DeviceBuffer.Allocate(device, DType.F32, 1);
        using var counted = DeviceBuffer.Allocate(device, DType.I32, 1);
        CrossEntropyKernels.CrossEntropyPickedSum(device, dPicked.Pointer, dTargets.Pointer, lse.Pointer, sum.Pointer, mean.Pointer, counted.Pointer, rows, vocab);
        return CheckResult.Combine(
            CheckResult.CompareBits("lossSum", sum.Download(), [expectedSum]),
            CheckResult.CompareBits("lossMean", mean.Download(), [Mean(expectedSum, cCounted)]),
            CompareCount(counted.DownloadInt32()[0], cCounted));
    }
}
