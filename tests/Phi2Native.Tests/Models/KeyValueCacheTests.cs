using System.Runtime.InteropServices;
using NUnit.Framework;
using Phi2Native.Autograd;
using Phi2Native.Backends.Ops.Attention;
using Phi2Native.FineTuning.Lora;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Models;

/// <summary>The KV-cache path: the backend's cache ops, logits equal to a full forward at every step, one position per step.</summary>
[TestFixture]
public class KeyValueCacheTests
{
    internal static readonly Phi2Config Small = Phi2Config.Tiny with
    {
        VocabSize = 37, HiddenSize = 24, IntermediateSize = 40, NumHiddenLayers = 3, NumAttentionHeads = 3, RotaryDim = 4,
        MaxPositionEmbeddings = 32, ResidPdrop = 0,
    };

    // Two rows of equal length (the model-level cache takes a rectangular batch).
    private static readonly int[][] Rows = [[3, 17, 5, 36, 0, 21, 9, 9, 14, 2, 30], [8, 1, 33, 12, 7, 7, 25, 4, 19, 28, 6]];

    private static Tensor Random(int seed, params int[] shape)
    {
        var random = new Random(seed);
        var values = new float[Tensor.CountElements(shape)];
        for (int i = 0; i < values.Length; i++) values[i] = (float)(random.NextDouble() * 2 - 1);
        return GradientCheck.Backend.FromBytes(MemoryMarshal.AsBytes(values.AsSpan()), DType.F32, shape, DType.F32);
    }

    [Test]
    public void CachedAttentionOverFilledRowsEqualsAttention()
    {
        using var scope = TensorScope.Begin();
        var backend = GradientCheck.Backend;
        int batch = 2, time = 7, capacity = 11, heads = 3, dim = 5;
        var q = Random(1, batch, time, heads, dim);
        var k = Random(2, batch, time, heads, dim);
        var v = Random(3, batch, time, heads, dim);
        var expected = AttentionOp.Forward(q, k, v, out _).ToSingleArray();

        // Rows 0..4 in one write, 5..6 in another; rows 7..10 are poisoned below and must not be read.
        using var keys = TensorScope.Detach(backend.Zeros([batch, capacity, heads, dim], DType.F32));
        using var values = TensorScope.Detach(backend.Zeros([batch, capacity, heads, dim], DType.F32));
        float[] kAll = k.ToSingleArray(), vAll = v.ToSingleArray();
        Tensor Slice(float[] all, int from, int count)
        {
            var part = new float[batch * count * heads * dim];
            int row = heads * dim;
            for (int b = 0; b < batch; b++)
                Array.Copy(all, (b * time + from) * row, part, b * count * row, count * row);
            return backend.FromBytes(MemoryMarshal.AsBytes(part.AsSpan()), DType.F32, [batch, count, heads, dim], DType.F32);
        }
        UniformPositions.CacheWrite(Slice(kAll, 0, 5), keys, 0);
        UniformPositions.CacheWrite(Slice(vAll, 0, 5), values, 0);
        UniformPositions.CacheWrite(Slice(kAll, 5, 2), keys, 5);
        UniformPositions.CacheWrite(Slice(vAll, 5, 2), values, 5);
        // Poison the unused rows: a read past keyTime would show up as NaN.
        var poisoned = keys.ToSingleArray();
        for (int b = 0; b < batch; b++)
            for (int t = time; t < capacity; t++)
                poisoned.AsSpan((b * capacity + t) * heads * dim, heads * dim).Fill(float.NaN);
        backend.Copy(backend.FromBytes(MemoryMarshal.AsBytes(poisoned.AsSpan()), DType.F32, keys.Shape, DType.F32), keys);

        TensorAssert.Close("all queries", expected, UniformPositions.CachedAttention(q, keys, values, time).ToSingleArray(), Tolerance.Forward(DType.F32));
        // The last query alone (a decode step) against the 7 cached rows: the last row of the full result.
        var lastQuery = Slice(q.ToSingleArray(), time - 1, 1);
        float[] last = UniformPositions.CachedAttention(lastQuery, keys, values, time).ToSingleArray();
        int rowSize = heads * dim;
        var expectedLast = new float[batch * rowSize];
        for (int b = 0; b < batch; b++) Array.Copy(expected, (b * time + time - 1) * rowSize, expectedLast, b * rowSize, rowSize);
        TensorAssert.Close("decode step", expectedLast, last, Tolerance.Forward(DType.F32));
    }

    [Test]
    public void CacheOpsRejectMisfits()
    {
        using var scope = TensorScope.Begin();
        var backend = GradientCheck.Backend;
        var cache = backend.Zeros([1, 4, 2, 3], DType.F32);
        Assert.Throws<ArgumentOutOfRangeException>(() => UniformPositions.CacheWrite(Random(1, 1, 2, 2, 3), cache, 3));
        Assert.Throws<ArgumentException>(() => UniformPositions.CacheWrite(Random(1, 1, 2, 3, 3), cache, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => UniformPositions.CachedAttention(Random(1, 1, 2, 2, 3), cache, cache, 5));
        Assert.Throws<ArgumentOutOfRangeException>(() => UniformPositions.CachedAttention(Random(1, 1, 2, 2, 3), cache, cache, 1));
    }

    private static float[] FullLogits(Phi2Model model, int[][] rows, int length)
    {
        using var scope = TensorScope.Begin();
        var ids = rows.SelectMany(r => r.Take(length)).ToArray();
        return model.Forward(model.CreateInputIds(ids, rows.Length)).ToSingleArray();   // [B, length, V]
    }

    /// <summary>Row b, position t of logits [B, T, V].</summary>
    private static float[] Position(float[] logits, int batch, int time, int vocab, int b, int t) =>
        logits.AsSpan((b * time + t) * vocab, vocab).ToArray();

    [TestCase(false)]
    [TestCase(true)]
    public void CachedLogitsEqualAFullForwardAtEveryStep(bool withLora)
    {
        using var model = Phi2Model.CreateRandom(Small, GradientCheck.Backend, seed: 5);
        using var lora = withLora ? LoraModel.Create(model, new LoraConfig { R = 2, TargetModules = ["q_proj", "k_proj", "v_proj", "dense", "fc1"] }, seed: 1) : null;
        if (lora != null) LoraModelRandomize(lora);
        int batch = Rows.Length, vocab = Small.VocabSize, prompt = 4, total = Rows[0].Length;
        using var cache = new KeyValueCache(model, batch, total);

        using (var scope = TensorScope.Begin())
        {
            var ids = Rows.SelectMany(r => r.Take(prompt)).ToArray();
            float[] prefill = model.Forward(model.CreateInputIds(ids, batch), cache).ToSingleArray();   // [B, 4, V]
            TensorAssert.Close("prefill", FullLogits(model, Rows, prompt), prefill, Tolerance.Forward(DType.F32));
        }
        for (int t = prompt; t < total; t++)
        {
            float[] full = FullLogits(model, Rows, t + 1);
            long before = model.Counters.TokensComputed;
            using var scope = TensorScope.Begin();
            float[] step = model.Forward(model.CreateInputIds(Rows.Select(r => r[t]).ToArray(), batch), cache).ToSingleArray();   // [B, 1, V]
            Assert.That(model.Counters.TokensComputed - before, Is.EqualTo(batch), "a decode step computes one position per row");
            for (int b = 0; b < batch; b++)
                TensorAssert.Close($"row {b}, position {t}", Position(full, batch, t + 1, vocab, b, t), Position(step, batch, 1, vocab, b, 0),
                    Tolerance.Forward(DType.F32));
        }
        Assert.That(cache.Length, Is.EqualTo(total));
        Assert.That(cache.PositionsComputed, Is.EqualTo(batch * total), "each position was computed once");
    }

    [Test]
    public void TheLastPositionAloneEqualsTheFullForwardsLastPositionAndComputesOneLogitRowPerRow()
    {
        using var model = Phi2Model.CreateRandom(Small, GradientCheck.Backend, seed: 5);
        int batch = Rows.Length, vocab = Small.VocabSize, prompt = 7;
        float[] full = FullLogits(model, Rows, prompt + 1);                                       // [B, 8, V]
        using var cache = new KeyValueCache(model, batch, 12);
        using var scope = TensorScope.Begin();
        long before = model.Counters.LogitRowsComputed;
        var prefill = model.ForwardLast(model.CreateInputIds(Rows.SelectMany(r => r.Take(prompt)).ToArray(), batch), cache);
        Assert.That(prefill.Shape.ToArray(), Is.EqualTo(new[] { batch, 1, vocab }));
        Assert.That(model.Counters.LogitRowsComputed - before, Is.EqualTo(batch), "lm_head ran on one position per row, not on B x T");
        Assert.That(cache.Length, Is.EqualTo(prompt), "every prompt position still went into the cache");
        float[] last = prefill.ToSingleArray();
        for (int b = 0; b < batch; b++)
            TensorAssert.Close($"row {b}, prefill's last position", Position(full, batch, prompt + 1, vocab, b, prompt - 1),
                Position(last, batch, 1, vocab, b, 0), Tolerance.Forward(DType.F32));
        // A decode step after it: the cache holds exactly what a full-logits prefill would have left.
        float[] step = model.ForwardLast(model.CreateInputIds(Rows.Select(r => r[prompt]).ToArray(), batch), cache).ToSingleArray();
        for (int b = 0; b < batch; b++)
            TensorAssert.Close($"row {b}, decode step", Position(full, batch, prompt + 1, vocab, b, prompt),
                Position(step, batch, 1, vocab, b, 0), Tolerance.Forward(DType.F32));
        // The full-logits cache forward computes every row.
        before = model.Counters.LogitRowsComputed;
        model.Forward(model.CreateInputIds(Rows.Select(r => r[prompt + 1]).ToArray(), batch), cache);
        Assert.That(model.Counters.LogitRowsComputed - before, Is.EqualTo(batch));
        cache.Reset();
        before = model.Counters.LogitRowsComputed;
        model.Forward(model.CreateInputIds(Rows.SelectMany(r => r.Take(prompt)).ToArray(), batch), cache);
        Assert.That(model.Counters.LogitRowsComputed - before, Is.EqualTo(batch * prompt));
    }

    [Test]
    public void LogitsAtChosenPositionsEqualTheFullForwardThere()
    {
        using var model = Phi2Model.CreateRandom(Small, GradientCheck.Backend, seed: 5);
        int batch = Rows.Length, vocab = Small.VocabSize, time = 6;
        float[] full = FullLogits(model, Rows, time);
        using var cache = new KeyValueCache(model, batch, time);
        using var scope = TensorScope.Begin();
        int[] positions = [2, 5];
        float[] chosen = model.Forward(model.CreateInputIds(Rows.SelectMany(r => r.Take(time)).ToArray(), batch), cache, positions).ToSingleArray();
        for (int b = 0; b < batch; b++)
            TensorAssert.Close($"row {b} at {positions[b]}", Position(full, batch, time, vocab, b, positions[b]), Position(chosen, batch, 1, vocab, b, 0),
                Tolerance.Forward(DType.F32));
        cache.Reset();
        var ids = model.CreateInputIds(Rows.SelectMany(r => r.Take(3)).ToArray(), batch);
        Assert.That(() => model.Forward(ids, cache, [0]), Throws.InstanceOf<ModelInputException>().With.Message.Contains("logitPositions"));
        Assert.That(() => model.Forward(ids, cache, [0, 3]), Throws.InstanceOf<ModelInputException>().With.Message.Contains("row 1's position 3"));
        Assert.That(cache.Length, Is.Zero, "a bad position is found before anything runs");
    }

    [Test]
    public void RowsOfDifferentLengthsEachEqualTheirOwnFullForward()
    {
        using var model = Phi2Model.CreateRandom(Small, GradientCheck.Backend, seed: 5);
        int batch = Rows.Length, vocab = Small.VocabSize;
        int[] prompts = [6, 3];   // row 1 is prefilled right-padded to 6 with junk, then truncated to its 3
        float[] Alone(int b, int length) => FullLogits(model, [Rows[b]], length);   // [1, length, V]
        using var cache = new KeyValueCache(model, batch, Rows[0].Length);
        using (var scope = TensorScope.Begin())
        {
            int[] padded = [.. Rows[0].Take(6), .. Rows[1].Take(3), 36, 36, 36];
            float[] first = model.Forward(model.CreateInputIds(padded, batch), cache, [prompts[0] - 1, prompts[1] - 1]).ToSingleArray();
            for (int b = 0; b < batch; b++)
                TensorAssert.Close($"row {b}, prefill", Position(Alone(b, prompts[b]), 1, prompts[b], vocab, 0, prompts[b] - 1),
                    Position(first, batch, 1, vocab, b, 0), Tolerance.Forward(DType.F32));
        }
        cache.Truncate(1, prompts[1]);
        Assert.That((cache.RowLength(0), cache.RowLength(1), cache.Length, cache.RowsEqual), Is.EqualTo((6, 3, 6, false)));
        // Each step appends one token to each row at its own position: row 0 at 6, 7, ...; row 1 at 3, 4, ...
        for (int step = 0; step < 4; step++)
        {
            using var scope = TensorScope.Begin();
            int[] ids = [Rows[0][prompts[0] + step], Rows[1][prompts[1] + step]];
            float[] logits = model.ForwardLast(model.CreateInputIds(ids, batch), cache).ToSingleArray();
            for (int b = 0; b < batch; b++)
            {
                int position = prompts[b] + step;
                TensorAssert.Close($"row {b}, position {position}", Position(Alone(b, position + 1), 1, position + 1, vocab, 0, position),
                    Position(logits, batch, 1, vocab, b, 0), Tolerance.Forward(DType.F32));
            }
        }
        Assert.That((cache.RowLength(0), cache.RowLength(1)), Is.EqualTo((10, 7)));
    }

    [Test]
    public void TruncateRefusesToGrowARow()
    {
        using var model = Phi2Model.CreateRandom(Small, GradientCheck.Backend, seed: 5);
        using var cache = new KeyValueCache(model, 2, 8);
        using var scope = TensorScope.Begin();
        model.Forward(model.CreateInputIds([1, 2, 3, 4], batch: 2), cache);
        Assert.That(() => cache.Truncate(0, 3), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contains("[0, 2]"));
        Assert.That(() => cache.Truncate(2, 0), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("row"));
        cache.Truncate(0, 0);
        Assert.That((cache.RowLength(0), cache.RowLength(1), cache.Length), Is.EqualTo((0, 2, 2)));
        cache.Reset();
        Assert.That(cache.RowsEqual && cache.Length == 0, Is.True);
    }

    /// <summary>PEFT starts B at zero; a non-zero B makes the adapters change the logits.</summary>
    private static void LoraModelRandomize(LoraModel lora)
    {
        var random = new Random(9);
        foreach (var b in lora.LinearAdapters.Select(a => a.B))
        {
            var values = b.ToSingleArray().Select(_ => (float)(random.NextDouble() - 0.5)).ToArray();
            using var source = b.Backend.FromBytes(MemoryMarshal.AsBytes(values.AsSpan()), DType.F32, b.Shape, b.DType);
            b.Backend.Copy(source, b);
        }
    }

    [Test]
    public void TheLoraAdapterChangesTheCachedLogits()
    {
        using var model = Phi2Model.CreateRandom(Small, GradientCheck.Backend, seed: 5);
        float[] Cached()
        {
            using var cache = new KeyValueCache(model, 1, 8);
            using var scope = TensorScope.Begin();
            return model.Forward(model.CreateInputIds(Rows[0].Take(5).ToArray()), cache).ToSingleArray();
        }
        float[] plain = Cached();
        using var lora = LoraModel.Create(model, new LoraConfig { R = 2, TargetModules = ["q_proj", "v_proj"] }, seed: 1);
        LoraModelRandomize(lora);
        Assert.That(Cached(), Is.Not.EqualTo(plain));
    }

    [Test]
    public void MisuseIsAClearError()
    {
        using var model = Phi2Model.CreateRandom(Small, GradientCheck.Backend, seed: 5);
        using var cache = new KeyValueCache(model, 1, 6);
        using var scope = TensorScope.Begin();
        var five = model.CreateInputIds([1, 2, 3, 4, 5]);
        model.Forward(five, cache);
        Assert.Throws<ModelInputException>(() => model.Forward(model.CreateInputIds([1, 2]), cache));   // 5 + 2 > 6
        Assert.Throws<ModelInputException>(() => model.Forward(model.CreateInputIds([1, 2], batch: 2), cache));
        Assert.Throws<ModelInputException>(() => new KeyValueCache(model, 1, Small.MaxPositionEmbeddings + 1));
        Assert.Throws<ModelInputException>(() => new KeyValueCache(model, 0, 4));
        using (GradientTape.Begin())
            Assert.Throws<InvalidOperationException>(() => model.Forward(model.CreateInputIds([1]), cache));
        model.Training = true;
        Assert.Throws<InvalidOperationException>(() => model.Forward(model.CreateInputIds([1]), cache));
        model.Training = false;
        cache.Reset();
        Assert.That(cache.Length, Is.Zero);
        Assert.DoesNotThrow(() => model.Forward(five, cache));
    }
}
