using NUnit.Framework;
using Phi2Native.Autograd;
using Phi2Native.Autograd.Ops;
using Phi2Native.Backends.Ops.Loss;
using Phi2Native.Backends.Ops.Projection;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Backends;

/// <summary>
/// LinearCrossEntropyOp (lm_head and the loss in chunks of rows) against the unfused path it replaces, LinearOp then
/// CrossEntropyOp, on the same backend and inputs: the loss bit for bit, dX, dW and db within a few fp32 roundings
/// (dW and db are summed chunk by chunk; dLoss multiplies dX after its GEMM rather than the logits' gradient before).
/// 11 rows in chunks of 3 (the last chunk short), ignored targets, and rows 6 .. 8 (the third chunk) all ignored.
/// </summary>
[TestFixture]
public class LinearCrossEntropyTests : CudaBackendTestBase
{
    private const int Rows = 11, In = 24, Vocab = 37, Ignore = CrossEntropyOp.DefaultIgnoreIndex;

    // Target 0 and V - 1 appear; rows 2, 6, 7, 8 and 10 are ignored (the chunk of rows 6 .. 8 scores nothing).
    private static readonly int[] Targets = [0, 36, Ignore, 5, 17, 9, Ignore, Ignore, Ignore, 30, Ignore];

    private sealed record Result(float Loss, float[]? Dx, float[]? DWeight, float[]? DBias);

    private static Result Run(IBackend backend, DType dtype, bool fused, int chunkRows, double dLoss, bool trainHead, bool tape = true)
    {
        using var scope = TensorScope.Begin();
        var x = On(backend, Random(Rows * In, 1, 2), dtype, Rows, In);
        var weight = On(backend, Random(Vocab * In, 2, 0.5), dtype, Vocab, In);
        var bias = On(backend, Random(Vocab, 3, 0.5), dtype, Vocab);
        x.RequiresGrad = true;
        weight.RequiresGrad = bias.RequiresGrad = trainHead;
        Tensor loss;
        if (!tape)
        {
            loss = fused ? LinearCrossEntropyOp.Apply(x, weight, bias, Targets, chunkRows: chunkRows)
                : CrossEntropyOp.Apply(LinearOp.Apply(x, weight, bias), Ids(backend, Targets, Rows));
            return new Result(loss.ToSingleArray()[0], null, null, null);
        }
        using (var recording = GradientTape.Begin())
        {
            loss = fused ? LinearCrossEntropyOp.Apply(x, weight, bias, Targets, chunkRows: chunkRows)
                : CrossEntropyOp.Apply(LinearOp.Apply(x, weight, bias), Ids(backend, Targets, Rows));
            recording.Backward(ScaleOp.Apply(loss, dLoss));
        }
        return new Result(loss.ToSingleArray()[0], x.Grad!.ToSingleArray(), weight.Grad?.ToSingleArray(), bias.Grad?.ToSingleArray());
    }

    private static void Same(Result expected, Result actual, Tolerance gradients)
    {
        Assert.That(BitConverter.SingleToInt32Bits(actual.Loss), Is.EqualTo(BitConverter.SingleToInt32Bits(expected.Loss)),
            $"loss {actual.Loss:R}, unfused {expected.Loss:R}: the same terms summed in the same order");
        TensorAssert.Close("dX", expected.Dx, actual.Dx, gradients);
        if (expected.DWeight is null) Assert.That(actual.DWeight, Is.Null);
        else
        {
            TensorAssert.Close("dW", expected.DWeight, actual.DWeight, gradients);
            TensorAssert.Close("db", expected.DBias, actual.DBias, gradients);
        }
    }

    // fp32: dW summed over 4 chunks instead of one GEMM, and dLoss applied after the GEMMs: a few ulps.
    private static readonly Tolerance F32Gradients = new(2e-6, 2e-6);

    [TestCase(3, 1.0)]
    [TestCase(3, 0.37)]
    [TestCase(4, 0.25)]
    [TestCase(Rows, 1.0)]
    [TestCase(1, 0.5)]
    public void OnTheCpu_ChunkedMatchesLinearThenCrossEntropy(int chunkRows, double dLoss)
    {
        var unfused = Run(Cpu, DType.F32, fused: false, 0, dLoss, trainHead: true);
        var fused = Run(Cpu, DType.F32, fused: true, chunkRows, dLoss, trainHead: true);
        Same(unfused, fused, F32Gradients);
    }

    [Test]
    public void OnTheCpu_WithDLossOne_DxIsTheUnfusedBits()
    {
        // dLoss 1: the logits' gradient is the same bits, and each dX row is one GEMM row over the same k order.
        var unfused = Run(Cpu, DType.F32, fused: false, 0, 1.0, trainHead: false);
        var fused = Run(Cpu, DType.F32, fused: true, 3, 1.0, trainHead: false);
        Same(unfused, fused, new Tolerance(0, 0));
        Assert.That(fused.DWeight, Is.Null, "a frozen head gets no dW");
    }

    [Test]
    public void OnTheCpu_InF64_ChunkedMatchesUnfused()
    {
        var unfused = Run(Cpu, DType.F64, fused: false, 0, 0.37, trainHead: true);
        var fused = Run(Cpu, DType.F64, fused: true, 4, 0.37, trainHead: true);
        Same(unfused, fused, new Tolerance(1e-14, 1e-13));
    }

    [Test]
    public void WithoutATape_ItIsTheLossOnly()
    {
        var unfused = Run(Cpu, DType.F32, fused: false, 0, 1, trainHead: true, tape: false);
        var fused = Run(Cpu, DType.F32, fused: true, 3, 1, trainHead: true, tape: false);
        Assert.That(fused.Loss, Is.EqualTo(unfused.Loss));
        var emulated = Run(Cuda, DType.F32, fused: true, 3, 1, trainHead: true, tape: false);
        Assert.That(emulated.Loss, Is.EqualTo(Run(Cuda, DType.F32, fused: false, 0, 1, trainHead: true, tape: false).Loss));
    }

    [TestCase(3, 1.0), Category("Emulated")]
    [TestCase(4, 0.37), Category("Emulated")]
    [TestCase(Rows, 0.25), Category("Emulated")]
    public void OnTheEmulatedDevice_InF32_ChunkedMatchesUnfused_AndTheCpu(int chunkRows, double dLoss)
    {
        var unfused = Run(Cuda, DType.F32, fused: false, 0, dLoss, trainHead: true);
        var fused = Run(Cuda, DType.F32, fused: true, chunkRows, dLoss, trainHead: true);
        Same(unfused, fused, F32Gradients);
        // And the kernels against the CPU's fused op: the loss within fp32 lse rounding, the gradients likewise.
        var cpu = Run(Cpu, DType.F32, fused: true, chunkRows, dLoss, trainHead: true);
        TensorAssert.Close("loss vs CPU", new[] { cpu.Loss }, new[] { fused.Loss }, Tolerance.Forward(DType.F32));
        TensorAssert.Close("dX vs CPU", cpu.Dx, fused.Dx, Tolerance.Gradient(DType.F32));
        TensorAssert.Close("dW vs CPU", cpu.DWeight, fused.DWeight, Tolerance.Gradient(DType.F32));
        TensorAssert.Close("db vs CPU", cpu.DBias, fused.DBias, Tolerance.Gradient(DType.F32));
    }

    [TestCase(3, 1.0), Category("Emulated")]
    [TestCase(4, 0.5), Category("Emulated")]
    [TestCase(5, 0.37), Category("Emulated")]
    public void OnTheEmulatedDevice_InBf16_ChunkedMatchesUnfused(int chunkRows, double dLoss)
    {
        // A bf16 head is frozen (full training needs F32 parameters): dX only. dLoss 1 and 0.5 scale exactly; 0.37 rounds
        // dX to bf16 twice (after the GEMM, after the scale) where the unfused path rounds once: within a bf16 ulp.
        var unfused = Run(Cuda, DType.BF16, fused: false, 0, dLoss, trainHead: false);
        var fused = Run(Cuda, DType.BF16, fused: true, chunkRows, dLoss, trainHead: false);
        Same(unfused, fused, dLoss is 1.0 or 0.5 ? new Tolerance(0, 0) : new Tolerance(1.0 / 128, 1.0 / 128));
    }

    [Test]
    public void TheChunkRuleBoundsAChunksLogits()
    {
        // Phi-2 at B 4, T 2048: bf16 logits of 8192 x 51200 are 839 MB; 256 MiB a chunk gives 4 even chunks of 2048 rows.
        Assert.That(LinearCrossEntropyOp.RowsPerChunk(8192, 51200, DType.BF16), Is.EqualTo(2048));
        // fp32: at most 1310 rows a chunk, so 7 chunks of 1171 (the last 1166).
        Assert.That(LinearCrossEntropyOp.RowsPerChunk(8192, 51200, DType.F32), Is.EqualTo(1171));
        foreach (var (rows, vocab, dtype) in new[] { (8192, 51200, DType.BF16), (8192, 51200, DType.F32), (1, 51200, DType.F32), (100_000, 7, DType.F32) })
            Assert.That((long)LinearCrossEntropyOp.RowsPerChunk(rows, vocab, dtype) * vocab * dtype.SizeInBytes(), Is.LessThanOrEqualTo(LinearCrossEntropyOp.ChunkLogitBytes));
        Assert.That(LinearCrossEntropyOp.RowsPerChunk(11, 37, DType.F32, chunkRows: 3), Is.EqualTo(3));
        Assert.That(LinearCrossEntropyOp.RowsPerChunk(0, 37, DType.F32), Is.Zero);
    }

    [Test]
    public void ABadTargetIsRefusedNamingItsRow()
    {
        using var scope = TensorScope.Begin();
        var x = On(Cpu, Random(2 * In, 1), DType.F32, 2, In);
        var weight = On(Cpu, Random(Vocab * In, 2), DType.F32, Vocab, In);
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => LinearCrossEntropyOp.Apply(x, weight, null, [3, Vocab]));
        Assert.That(error!.Message, Does.Contain("targets[1]"));
        Assert.Throws<ArgumentException>(() => LinearCrossEntropyOp.Apply(x, weight, null, [3]));
    }

    [Test, Category("Emulated")]
    public void TheHeadsPeakBytesAreBoundedByAChunk()
    {
        // 64 rows, V 1000, C 16, fp32, lm_head trained in full: the unfused head holds the [64, 1000] logits and then their
        // gradient (2 x 256,000 bytes) at once; chunks of 8 rows hold one [8, 1000] buffer (32,000 bytes) beside what any
        // head keeps: dX [64, 16], dW [1000, 16] and db [1000] (fp32), the lse, target logits and targets (12 bytes a row).
        const int rows = 64, inFeatures = 16, vocab = 1000, chunk = 8;
        long Peak(bool fused)
        {
            using var scope = TensorScope.Begin();
            var x = On(Cuda, Random(rows * inFeatures, 1), DType.F32, rows, inFeatures);
            var weight = On(Cuda, Random(vocab * inFeatures, 2, 0.3), DType.F32, vocab, inFeatures);
            var bias = On(Cuda, Random(vocab, 3), DType.F32, vocab);
            x.RequiresGrad = weight.RequiresGrad = bias.RequiresGrad = true;
            var targets = Enumerable.Range(0, rows).Select(r => r % 5 == 4 ? Ignore : r * 7 % vocab).ToArray();
            var targetTensor = Ids(Cuda, targets, rows);
            // The parameters' gradients exist before the step (an accumulating run's second micro-batch): not the head's.
            using (var warm = GradientTape.Begin())
                warm.Backward(ScaleOp.Apply(CrossEntropyOp.Apply(LinearOp.Apply(x, weight, bias), targetTensor), 0));
            x.ZeroGrad();
            Cuda.ResetPeakMemory();
            long before = Cuda.Memory.BytesInUse;
            using (var tape = GradientTape.Begin())
            {
                var loss = fused ? LinearCrossEntropyOp.Apply(x, weight, bias, targets, chunkRows: chunk)
                    : CrossEntropyOp.Apply(LinearOp.Apply(x, weight, bias), targetTensor);
                tape.Backward(loss);
            }
            return Cuda.Memory.PeakBytesInUse - before;
        }
        long unfused = Peak(false), fusedPeak = Peak(true);
        TestContext.Out.WriteLine($"head peak bytes over the step's inputs: unfused {unfused}, fused in chunks of {chunk} rows {fusedPeak}");
        const long logits = (long)rows * vocab * sizeof(float), chunkLogits = (long)chunk * vocab * sizeof(float);
        const long kept = (long)rows * inFeatures * 4 + (long)vocab * inFeatures * 4 + vocab * 4 + rows * 12;
        Assert.That(unfused, Is.GreaterThanOrEqualTo(2 * logits), "the unfused head holds the logits and their gradient");
        Assert.That(fusedPeak, Is.LessThanOrEqualTo(chunkLogits + kept + 16384), $"fused head peak {fusedPeak} bytes; unfused {unfused}");
        Assert.That(fusedPeak, Is.LessThan(logits / 2));
    }
}
