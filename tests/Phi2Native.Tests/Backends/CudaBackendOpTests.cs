using NUnit.Framework;
using Phi2Native.Autograd;
using Phi2Native.Autograd.Ops;
using Phi2Native.Backends.Ops.Activation;
using Phi2Native.Backends.Ops.Dropout;
using Phi2Native.Backends.Ops.Embeddings;
using Phi2Native.Backends.Ops.KvCache;
using Phi2Native.Backends.Ops.Loss;
using Phi2Native.Backends.Ops.Normalization;
using Phi2Native.Backends.Ops.Optimizer;
using Phi2Native.Backends.Ops.Projection;
using Phi2Native.Backends.Ops.Rotary;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Backends;

/// <summary>
/// Each op of the CUDA backend on the emulated device against the CPU backend on the same inputs: Linear through the
/// emulated cuBLAS(Lt), the kernels through their launchers. Odd sizes throughout; parameter gradients start non-zero
/// so that accumulation (+=) is checked, not just assignment.
/// </summary>
[TestFixture, Category("Emulated")]
public class CudaBackendOpTests : CudaBackendTestBase
{
    private static Tolerance Bf16Forward => Tolerance.Forward(DType.BF16);

    [TestCase(true)]
    [TestCase(false)]
    public void LinearForwardAndBackwardMatchTheCpuBackendInF32(bool withBias)
    {
        using var scope = TensorScope.Begin();
        var (x, gx) = RandomPair(1, DType.F32, 2, 3, 7);
        var (w, gw) = RandomPair(2, DType.F32, 5, 7);
        var (b, gb) = RandomPair(3, DType.F32, 5);
        Close("y", LinearOp.Forward(x, w, withBias ? b : null), LinearOp.Forward(gx, gw, withBias ? gb : null), F32);

        var (dy, gdy) = RandomPair(4, DType.F32, 2, 3, 5);
        var (dw, gdw) = RandomPair(5, DType.F32, 5, 7);
        var (db, gdb) = RandomPair(6, DType.F32, 5);
        var dx = Cpu.Empty([2, 3, 7], DType.F32);
        var gdx = Cuda.Empty([2, 3, 7], DType.F32);
        LinearOp.Backward(dy, x, w, dx, dw, db);
        LinearOp.Backward(gdy, gx, gw, gdx, gdw, gdb);
        Close("dx", dx, gdx, F32);
        Close("dW (+=)", dw, gdw, F32);
        Close("dBias (+=)", db, gdb, F32);
    }

    [Test]
    public void LinearBackwardComputesOnlyTheGradientsAskedFor()
    {
        using var scope = TensorScope.Begin();
        var (x, gx) = RandomPair(7, DType.F32, 9, 4);
        var (w, gw) = RandomPair(8, DType.F32, 3, 4);
        var (dy, gdy) = RandomPair(9, DType.F32, 9, 3);
        var (db, gdb) = RandomPair(10, DType.F32, 3);
        LinearOp.Backward(dy, x, w, null, null, db);
        LinearOp.Backward(gdy, gx, gw, null, null, gdb);
        Close("dBias only", db, gdb, F32);
        var gdx = Cuda.Empty([9, 4], DType.F32);
        LinearOp.Backward(gdy, gx, gw, gdx, null, null);
        var dx = Cpu.Empty([9, 4], DType.F32);
        LinearOp.Backward(dy, x, w, dx, null, null);
        Close("dx only", dx, gdx, F32);
    }

    [Test]
    public void LinearInBFloat16MatchesTheCpuBackendToBFloat16Rounding()
    {
        using var scope = TensorScope.Begin();
        var (x, gx) = RandomPair(11, DType.BF16, 6, 19);
        var (w, gw) = RandomPair(12, DType.BF16, 10, 19);
        var (b, gb) = RandomPair(13, DType.BF16, 10);
        var y = LinearOp.Forward(gx, gw, gb);
        Assert.That(y.DType, Is.EqualTo(DType.BF16));
        Close("y bf16", LinearOp.Forward(x, w, b), y, Bf16Forward);

        var (dy, gdy) = RandomPair(14, DType.BF16, 6, 10);
        var dw = Cpu.Zeros([10, 19], DType.F32);
        var db = Cpu.Zeros([10], DType.F32);
        var dx = Cpu.Empty([6, 19], DType.F32);
        LinearOp.Backward(dy, x, w, dx, dw, db);
        // fp32 parameter gradients of a bf16 layer, and a bf16 activation gradient.
        var gdw = Cuda.Zeros([10, 19], DType.F32);
        var gdb = Cuda.Zeros([10], DType.F32);
        var gdx = Cuda.Empty([6, 19], DType.BF16);
        LinearOp.Backward(gdy, gx, gw, gdx, gdw, gdb);
        Close("dx bf16", dx, gdx, Bf16Forward);
        Close("dW f32 from bf16", dw, gdw, F32);
        Close("dBias f32 from bf16", db, gdb, F32);
    }

    [Test]
    public void LinearRefusesMismatchedShapesAndDTypes()
    {
        using var scope = TensorScope.Begin();
        var x = On(Cuda, Random(12, 1), DType.F32, 2, 6);
        var w = On(Cuda, Random(35, 2), DType.F32, 5, 7);
        Assert.That(() => LinearOp.Forward(x, w, null), Throws.ArgumentException.With.Message.Contains("does not end in 7"));
        var x7 = On(Cuda, Random(14, 1), DType.F32, 2, 7);
        var badBias = On(Cuda, Random(4, 3), DType.F32, 4);
        Assert.That(() => LinearOp.Forward(x7, w, badBias), Throws.ArgumentException.With.Message.Contains("Linear: bias must be [5]"));
        var wb = On(Cuda, Random(35, 2), DType.BF16, 5, 7);
        Assert.That(() => LinearOp.Forward(x7, wb, null), Throws.ArgumentException.With.Property("ParamName").EqualTo("weight"));
        var dy = On(Cuda, Random(10, 4), DType.F32, 2, 5);
        var dwWrong = Cuda.Zeros([7, 5], DType.F32);
        Assert.That(() => LinearOp.Backward(dy, x7, w, null, dwWrong, null), Throws.ArgumentException.With.Message.Contains("dWeight"));
    }

    [TestCase(DType.F32)]
    [TestCase(DType.BF16)]
    public void EmbeddingForwardAndBackwardMatchTheCpuBackend(DType dtype)
    {
        using var scope = TensorScope.Begin();
        var (table, gtable) = RandomPair(20, dtype, 11, 6);
        int[] ids = [3, 0, 10, 3, 7, 3, 1, 0];
        var cpuIds = Ids(Cpu, ids, 2, 4);
        var cudaIds = Ids(Cuda, ids, 2, 4);
        var y = EmbeddingOp.Forward(gtable, cudaIds);
        Assert.That(y.DType, Is.EqualTo(dtype));
        Equal("gathered rows", EmbeddingOp.Forward(table, cpuIds), y);

        var (dy, gdy) = RandomPair(21, dtype, 2, 4, 6);
        var (dw, gdw) = RandomPair(22, DType.F32, 11, 6);
        EmbeddingOp.Backward(dy, cpuIds, dw);
        EmbeddingOp.Backward(gdy, cudaIds, gdw);
        Close("dWeight (+=, repeated ids)", dw, gdw, F32);
    }

    [Test]
    public void AnIdOutsideTheVocabularyGivesANaNRowWithoutAReadBack()
    {
        // The host checks ids before upload (Phi2Model.CreateInputIds); the device never reads them back, and a bad one
        // touches nothing out of bounds: its row is NaN, the others are the table's.
        using var scope = TensorScope.Begin();
        float[] values = Random(12, 1);
        var table = On(Cuda, values, DType.F32, 4, 3);
        var ids = Ids(Cuda, [1, 4, 0], 3);
        float[] output = EmbeddingOp.Forward(table, ids).ToArray<float>();
        Assert.That(output[..3], Is.EqualTo(values[3..6]));
        Assert.That(output[3..6], Has.All.NaN);
        Assert.That(output[6..], Is.EqualTo(values[..3]));
        var floats = On(Cuda, [1f], DType.F32, 1);
        Assert.That(() => EmbeddingOp.Forward(table, floats), Throws.ArgumentException.With.Message.Contains("ids is F32, expected I32"));
    }

    [TestCase(DType.F32)]
    [TestCase(DType.BF16)]
    public void LayerNormForwardAndBackwardMatchTheCpuBackend(DType dtype)
    {
        using var scope = TensorScope.Begin();
        int rows = 5, channels = 37;
        var values = Random(rows * channels, 30, 3).Select((v, i) => v + i % 7).ToArray();
        var (x, gx) = RandomPairFrom(values, dtype, rows, channels);
        var (w, gw) = RandomPair(31, dtype, channels);
        var (b, gb) = RandomPair(32, dtype, channels);
        var y = LayerNormOp.Forward(x, w, b, 1e-5, out var mean, out var rstd);
        var gy = LayerNormOp.Forward(gx, gw, gb, 1e-5, out var gmean, out var grstd);
        var tolerance = dtype == DType.F32 ? F32 : Bf16Forward;
        Close("y", y, gy, tolerance);
        Assert.That(gmean.DType, Is.EqualTo(DType.F32));
        Close("mean", mean, gmean, F32);
        Close("rstd", rstd, grstd, dtype == DType.F32 ? F32 : new Tolerance(1e-5, 1e-4));

        var (dy, gdy) = RandomPair(33, dtype, rows, channels);
        var (dw, gdw) = RandomPair(34, dtype, channels);
        var (db, gdb) = RandomPair(35, dtype, channels);
        var dx = Cpu.Empty([rows, channels], DType.F32);
        var gdx = Cuda.Empty([rows, channels], dtype);
        LayerNormOp.Backward(dy, x, w, mean, rstd, dx, dw, db);
        LayerNormOp.Backward(gdy, gx, gw, gmean, grstd, gdx, gdw, gdb);
        var gradient = dtype == DType.F32 ? new Tolerance(1e-5, 1e-4) : Tolerance.Gradient(DType.BF16);
        Close("dx", dx, gdx, gradient);
        Close("dWeight (+=)", dw, gdw, gradient);
        Close("dBias (+=)", db, gdb, gradient);

        // dx added (+=) to a gradient already there, as the residual stream's is when the LayerNorm runs backward.
        var (pending, gpending) = RandomPair(36, dtype, rows, channels);
        LayerNormOp.Backward(dy, x, w, mean, rstd, pending, null, null, accumulateDx: true);
        LayerNormOp.Backward(gdy, gx, gw, gmean, grstd, gpending, null, null, accumulateDx: true);
        Close("dx (+=)", pending, gpending, gradient);
    }

    [Test]
    public void RotaryForwardAndBackwardMatchTheCpuBackend()
    {
        using var scope = TensorScope.Begin();
        var (x, gx) = RandomPair(40, DType.F32, 2, 3, 2, 10);
        Close("rotary", UniformPositions.Rotary(x, 6, 10000, 3), UniformPositions.Rotary(gx, 6, 10000, 3), F32);
        var dx = Cpu.Empty([2, 3, 2, 10], DType.F32);
        var gdx = Cuda.Empty([2, 3, 2, 10], DType.F32);
        UniformPositions.RotaryBackward(x, dx, 6, 10000, 3);
        UniformPositions.RotaryBackward(gx, gdx, 6, 10000, 3);
        Close("rotary backward", dx, gdx, F32);
        Assert.That(() => UniformPositions.Rotary(gx, 5, 10000, 0), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("rotaryDim"));
    }

    [Test]
    public void CacheWriteFillsTheSameRowsAsTheCpuBackend()
    {
        using var scope = TensorScope.Begin();
        var (source, gsource) = RandomPair(41, DType.F32, 2, 2, 3, 4);
        var cache = Cpu.Zeros([2, 5, 3, 4], DType.F32);
        var gcache = Cuda.Zeros([2, 5, 3, 4], DType.F32);
        UniformPositions.CacheWrite(source, cache, 1);
        UniformPositions.CacheWrite(gsource, gcache, 1);
        Equal("cache", cache, gcache);
        // Rows [4, 6) leave the cache: the CPU refuses them, the device (which reads positions there) skips them.
        Assert.That(() => UniformPositions.CacheWrite(source, cache, 4), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("positions"));
        UniformPositions.CacheWrite(gsource, gcache, 4);
        Equal("cache after a skipped write", cache, gcache);
    }

    [Test]
    public void PerRowRotaryAndCacheWriteMatchTheCpuBackend()
    {
        using var scope = TensorScope.Begin();
        var (x, gx) = RandomPair(42, DType.F32, 3, 2, 2, 10);
        int[] offsets = [0, 5, 2];
        Close("rotary per row", RotaryOp.Forward(x, 6, 10000, Ids(Cpu, offsets, 3)), RotaryOp.Forward(gx, 6, 10000, Ids(Cuda, offsets, 3)), F32);
        var cache = Cpu.Zeros([3, 8, 2, 10], DType.F32);
        var gcache = Cuda.Zeros([3, 8, 2, 10], DType.F32);
        KvCacheOp.Write(x, cache, Ids(Cpu, offsets, 3));
        KvCacheOp.Write(gx, gcache, Ids(Cuda, offsets, 3));
        Equal("cache per row", cache, gcache);
        // The last valid position (Tmax - T = 6) and 0 in one batch.
        KvCacheOp.Write(x, cache, Ids(Cpu, [6, 0, 6], 3));
        KvCacheOp.Write(gx, gcache, Ids(Cuda, [6, 0, 6], 3));
        Equal("cache per row, last rows", cache, gcache);
        // Positions stay on the device, so a row the CPU refuses is not refused here: it is skipped, its cache untouched.
        var before = gcache.ToSingleArray();
        var gsource2 = Cuda.Zeros([3, 2, 2, 10], DType.F32);
        KvCacheOp.Write(gsource2, gcache, Ids(Cuda, [-1, 7, 0], 3));
        var after = gcache.ToSingleArray();
        int cacheRow = 8 * 2 * 10;
        Assert.That(after.AsSpan(0, 2 * cacheRow).ToArray(), Is.EqualTo(before.AsSpan(0, 2 * cacheRow).ToArray()), "rows 0 and 1 skipped");
        Assert.That(after.AsSpan(2 * cacheRow, 2 * 2 * 10).ToArray(), Is.All.Zero, "row 2 written at 0");
        Assert.That(() => KvCacheOp.Write(Cuda.Zeros([3, 9, 2, 10], DType.F32), gcache, Ids(Cuda, [0, 0, 0], 3)),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("source").And.Message.Contains("do not fit"));
        // A negative rotary offset (the CPU throws) gives that row NaN.
        var rotated = RotaryOp.Forward(gx, 6, 10000, Ids(Cuda, [0, -3, 2], 3)).ToSingleArray();
        int xRow = 2 * 2 * 10;
        Assert.That(rotated.AsSpan(xRow, xRow).ToArray(), Is.All.NaN);
        Assert.That(rotated.AsSpan(0, xRow).ToArray().Concat(rotated.AsSpan(2 * xRow, xRow).ToArray()), Has.None.NaN);
        Assert.That(() => RotaryOp.Forward(gx, 6, 10000, Ids(Cuda, [0, 1], 2)), Throws.ArgumentException.With.Message.Contains("positions must be [3]"));
    }

    [Test]
    public void CrossEntropyMatchesTheCpuBackendsMeanCountAndGradient()
    {
        using var scope = TensorScope.Begin();
        var (logits, glogits) = RandomPair(50, DType.F32, 6, 13);
        int[] targets = [4, -100, 12, 0, -100, 7];
        var loss = CrossEntropyOp.Forward(logits, Ids(Cpu, targets, 6), -100, out var lse, out var counted);
        var gloss = CrossEntropyOp.Forward(glogits, Ids(Cuda, targets, 6), -100, out var glse, out var gcounted);
        Assert.That(gcounted.ToArray<int>(), Is.EqualTo(counted.ToArray<int>()).And.EqualTo(new[] { 4 }));
        Close("loss mean", loss, gloss, F32);
        Close("logSumExp", lse, glse, F32);
        var dLogits = Cpu.Empty([6, 13], DType.F32);
        var gdLogits = Cuda.Empty([6, 13], DType.F32);
        var (dLoss, gdLoss) = RandomPairFrom([0.75f], DType.F32, 1);
        CrossEntropyOp.Backward(logits, Ids(Cpu, targets, 6), lse, counted, dLoss, -100, dLogits);
        CrossEntropyOp.Backward(glogits, Ids(Cuda, targets, 6), glse, gcounted, gdLoss, -100, gdLogits);
        Close("dLogits", dLogits, gdLogits, F32);
    }

    [Test]
    public void BFloat16LogitsRotaryAndCacheMatchTheCpuBackendToBFloat16Rounding()
    {
        using var scope = TensorScope.Begin();
        var (logits, glogits) = RandomPair(51, DType.BF16, 5, 17);
        int[] targets = [3, 16, -100, 0, 9];
        var loss = CrossEntropyOp.Forward(logits, Ids(Cpu, targets, 5), -100, out var lse, out var counted);
        var gloss = CrossEntropyOp.Forward(glogits, Ids(Cuda, targets, 5), -100, out var glse, out var gcounted);
        Assert.That((gloss.DType, glse.DType), Is.EqualTo((DType.F32, DType.F32)), "the loss is fp32 whatever the logits are");
        // The logits are the same bf16 values on both sides and the math is fp32 on both: only summation order differs.
        Close("loss mean (bf16 logits)", loss, gloss, F32);
        Close("logSumExp (bf16 logits)", lse, glse, F32);
        var dLogits = Cpu.Empty([5, 17], DType.F32);
        var gdLogits = Cuda.Empty([5, 17], DType.BF16);
        CrossEntropyOp.Backward(logits, Ids(Cpu, targets, 5), lse, counted, null, -100, dLogits);
        CrossEntropyOp.Backward(glogits, Ids(Cuda, targets, 5), glse, gcounted, null, -100, gdLogits);
        Close("dLogits bf16", dLogits, gdLogits, Tolerance.Forward(DType.BF16));

        var (x, gx) = RandomPair(52, DType.BF16, 2, 3, 2, 10);
        var gy = UniformPositions.Rotary(gx, 6, 10000, 1);
        Assert.That(gy.DType, Is.EqualTo(DType.BF16));
        Close("rotary bf16", UniformPositions.Rotary(x, 6, 10000, 1), gy, Tolerance.Forward(DType.BF16));
        var cache = Cpu.Zeros([2, 4, 2, 10], DType.BF16);
        var gcache = Cuda.Zeros([2, 4, 2, 10], DType.BF16);
        var xb = Cpu.Cast(x, DType.BF16);
        UniformPositions.CacheWrite(xb, cache, 1);
        UniformPositions.CacheWrite(gx, gcache, 1);
        Equal("cache bf16 (an exact move)", cache, gcache);
    }

    [Test]
    public void ABadTargetGivesNaNWithoutAReadBackAndShapesAreChecked()
    {
        // The host checks targets before upload (Phi2Model.CausalLanguageModelLoss); on the device a bad one makes its
        // row's loss NaN, and the mean with it, instead of reading out of bounds.
        using var scope = TensorScope.Begin();
        var logits = On(Cuda, Random(6, 1), DType.F32, 2, 3);
        var loss = CrossEntropyOp.Forward(logits, Ids(Cuda, [1, 3], 2), -100, out _, out _);
        Assert.That(loss.ToArray<float>()[0], Is.NaN);
        Assert.That(() => CrossEntropyOp.Forward(logits, Ids(Cuda, [1], 1), -100, out _, out _),
            Throws.ArgumentException.With.Message.Contains("targets must hold 2 elements"));
    }

    [Test]
    public void AdamWStepsAreBitExactWithTheCpuBackend()
    {
        using var scope = TensorScope.Begin();
        var (p, gp) = RandomPair(60, DType.F32, 3, 43);
        var (g, gg) = RandomPair(61, DType.F32, 3, 43);
        var m = Cpu.Zeros([3, 43], DType.F32);
        var v = Cpu.Zeros([3, 43], DType.F32);
        var gm = Cuda.Zeros([3, 43], DType.F32);
        var gv = Cuda.Zeros([3, 43], DType.F32);
        for (int step = 1; step <= 2; step++)
        {
            var arguments = new AdamWStepArguments(2e-3, 0.9, 0.999, 1e-8, 0.01, step);
            AdamWOp.Step([new AdamWTensors(p, g, m, v, arguments)]);
            AdamWOp.Step([new AdamWTensors(gp, gg, gm, gv, arguments)]);
        }
        Equal("parameter", p, gp);
        Equal("first moment", m, gm);
        Equal("second moment", v, gv);
        var bf = Cuda.Zeros([3, 43], DType.BF16);
        Assert.That(() => AdamWOp.Step([new AdamWTensors(gp, bf, gm, gv, new AdamWStepArguments(1e-3, 0.9, 0.999, 1e-8, 0, 1))]),
            Throws.ArgumentException.With.Message.Contains("Gradient"));
    }

    [TestCase(DType.F32)]
    [TestCase(DType.BF16)]
    public void GeluNewForwardAndBackwardMatchTheCpuBackend(DType dtype)
    {
        using var scope = TensorScope.Begin();
        var values = Random(3 * 41, 80, 4);
        var (x, gx) = RandomPairFrom(values, dtype, 3, 41);
        var (dy, gdy) = RandomPair(81, dtype, 3, 41);
        var tolerance = dtype == DType.F32 ? F32 : Bf16Forward;
        var y = GeluNewOp.Forward(gx);
        Assert.That(y.DType, Is.EqualTo(dtype));
        Close("gelu_new", GeluNewOp.Forward(x), y, tolerance);
        var dx = Cpu.Empty([3, 41], DType.F32);
        var gdx = Cuda.Empty([3, 41], dtype);
        GeluNewOp.Backward(dy, x, dx);
        GeluNewOp.Backward(gdy, gx, gdx);
        Close("gelu_new backward", dx, gdx, tolerance);
    }

    [Test]
    public void DropoutDropsTheSameElementsAsTheCpuBackend()
    {
        using var scope = TensorScope.Begin();
        var (x, gx) = RandomPair(82, DType.F32, 5, 77);
        var y = DropoutOp.Forward(x, 0.3, 1234);
        var gy = DropoutOp.Forward(gx, 0.3, 1234);
        Equal("dropout", y, gy);
        Assert.That(gy.ToArray<float>().Count(v => v == 0), Is.InRange(60, 180), "about 30% dropped");
        var dx = Cpu.Empty([5, 77], DType.F32);
        var gdx = Cuda.Empty([5, 77], DType.F32);
        DropoutOp.Backward(x, dx, 0.3, 1234);
        DropoutOp.Backward(gx, gdx, 0.3, 1234);
        Equal("dropout backward", dx, gdx);
        Assert.That(() => DropoutOp.Forward(gx, 1.0, 1), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("probability"));
    }

    [Test]
    public void AutogradThroughLayerNormLinearAndLossMatchesTheCpuBackend()
    {
        // A model's tail on each backend: loss = CE(Linear(LayerNorm(Embedding(ids)))), gradients through the tape.
        var results = new Dictionary<string, float[]>();
        foreach (var backend in new IBackend[] { Cpu, Cuda })
        {
            string side = backend == Cpu ? "cpu" : "cuda";
            using var scope = TensorScope.Begin();
            using var tape = GradientTape.Begin();
            var table = On(backend, Random(9 * 8, 70), DType.F32, 9, 8);
            var gamma = On(backend, Random(8, 71).Select(v => 1 + v / 4).ToArray(), DType.F32, 8);
            var beta = On(backend, Random(8, 72), DType.F32, 8);
            var weight = On(backend, Random(9 * 8, 73), DType.F32, 9, 8);
            var bias = On(backend, Random(9, 74), DType.F32, 9);
            foreach (var parameter in new[] { table, gamma, beta, weight, bias }) parameter.RequiresGrad = true;
            var hidden = EmbeddingOp.Apply(table, Ids(backend, [1, 5, 8, 2, 2], 5));
            var logits = LinearOp.Apply(LayerNormOp.Apply(hidden, gamma, beta, 1e-5), weight, bias);
            var loss = CrossEntropyOp.Apply(logits, Ids(backend, [5, 8, -100, 2, 0], 5));
            tape.Backward(loss);
            results[$"{side} loss"] = loss.ToSingleArray();
            foreach (var (parameter, name) in new[] { (table, "table"), (gamma, "gamma"), (beta, "beta"), (weight, "weight"), (bias, "bias") })
                results[$"{side} d{name}"] = parameter.Grad!.ToSingleArray();
        }
        foreach (var name in new[] { "loss", "dtable", "dgamma", "dbeta", "dweight", "dbias" })
            TensorAssert.Close(name, results[$"cpu {name}"], results[$"cuda {name}"], new Tolerance(1e-5, 1e-4));
    }

    private (Tensor Cpu, Tensor Cuda) RandomPairFrom(float[] values, DType dtype, params int[] shape)
    {
        if (dtype != DType.F32) values = Phi2Native.Cuda.DeviceBuffer.Decode(dtype, Phi2Native.Cuda.DeviceBuffer.Encode(dtype, values));
        return Pair(values, dtype, shape);
    }
}
