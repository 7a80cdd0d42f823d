using System.Runtime.InteropServices;
using NUnit.Framework;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Ops.Attention;
using Phi2Native.Backends.Ops.KvCache;
using Phi2Native.Backends.Ops.Rotary;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Backends.Cpu;

/// <summary>
/// The ops with per-row positions, rotary, the KV-cache write and cached attention (rows of a KV cache at different positions), each
/// against the definition on every row alone: the plain attention over that row's own keys, the rotary at that
/// row's own offset, a copy into that row's own slots.
/// </summary>
[TestFixture]
public class CpuPerRowCacheOpsTests
{
    private static readonly CpuBackend Backend = new(poisonNewMemory: true);
    private const int Heads = 3, Dim = 6;

    private static Tensor Random(int seed, params int[] shape)
    {
        var random = new Random(seed);
        var values = new float[Tensor.CountElements(shape)];
        for (int i = 0; i < values.Length; i++) values[i] = (float)(random.NextDouble() * 2 - 1);
        return Backend.FromBytes(MemoryMarshal.AsBytes(values.AsSpan()), DType.F32, shape, DType.F32);
    }

    private static Tensor Rows(params int[] values) => Backend.FromBytes(MemoryMarshal.AsBytes(values.AsSpan()), DType.I32, [values.Length], DType.I32);

    /// <summary>Rows [from, from + count) of batch row b of x [B, T, H, D], as [1, count, H, D].</summary>
    private static Tensor Slice(Tensor x, int b, int from, int count)
    {
        float[] all = x.ToSingleArray();
        int row = x.Size(2) * x.Size(3);
        var part = all.AsSpan((b * x.Size(1) + from) * row, count * row).ToArray();
        return Backend.FromBytes(MemoryMarshal.AsBytes(part.AsSpan()), DType.F32, [1, count, x.Size(2), x.Size(3)], DType.F32);
    }

    [Test]
    public void RotaryRotatesEachRowAtItsOwnOffset()
    {
        using var scope = TensorScope.Begin();
        int batch = 3, time = 4, rotaryDim = 4;
        var x = Random(1, batch, time, Heads, Dim);
        int[] offsets = [0, 9, 2];
        float[] actual = RotaryOp.Forward(x, rotaryDim, 10000, Rows(offsets)).ToSingleArray();
        int rowSize = time * Heads * Dim;
        for (int b = 0; b < batch; b++)
        {
            // Rotary is checked against HF's formula in CpuRotaryTests.
            float[] expected = UniformPositions.Rotary(Slice(x, b, 0, time), rotaryDim, 10000, offsets[b]).ToSingleArray();
            Assert.That(actual.AsSpan(b * rowSize, rowSize).ToArray(), Is.EqualTo(expected), $"row {b}");
        }
    }

    [Test]
    public void CacheWritePutsEachRowAtItsOwnPosition()
    {
        using var scope = TensorScope.Begin();
        int batch = 2, time = 2, capacity = 6;
        var source = Random(2, batch, time, Heads, Dim);
        var cache = Backend.Zeros([batch, capacity, Heads, Dim], DType.F32);
        int[] positions = [4, 1];
        KvCacheOp.Write(source, cache, Rows(positions));
        float[] written = cache.ToSingleArray(), values = source.ToSingleArray();
        int row = Heads * Dim;
        for (int b = 0; b < batch; b++)
            for (int t = 0; t < capacity; t++)
            {
                int s = t - positions[b];
                var expected = s >= 0 && s < time ? values.AsSpan((b * time + s) * row, row).ToArray() : new float[row];
                Assert.That(written.AsSpan((b * capacity + t) * row, row).ToArray(), Is.EqualTo(expected), $"row {b}, slot {t}");
            }
    }

    [TestCase(1)]
    [TestCase(3)]
    public void CachedAttentionAttendsOverEachRowsOwnPrefix(int queryTime)
    {
        using var scope = TensorScope.Begin();
        int batch = 3, capacity = 9;
        int[] keyTimes = [queryTime, 9, 5];
        var q = Random(3, batch, queryTime, Heads, Dim);
        var keys = Random(4, batch, capacity, Heads, Dim);
        var values = Random(5, batch, capacity, Heads, Dim);
        float[] actual = AttentionOp.Cached(q, keys, values, Rows(keyTimes)).ToSingleArray();
        int rowSize = queryTime * Heads * Dim;
        for (int b = 0; b < batch; b++)
        {
            // The definition: plain causal attention of the row's queries over its first keyTimes[b] keys.
            float[] expected = AttentionOp.Forward(Slice(q, b, 0, queryTime), Slice(keys, b, 0, keyTimes[b]), Slice(values, b, 0, keyTimes[b]), out _).ToSingleArray();
            TensorAssert.Close($"row {b}", expected, actual.AsSpan(b * rowSize, rowSize), Tolerance.Forward(DType.F32));
        }
    }

    [Test]
    public void BadRowValuesNameTheArgument()
    {
        using var scope = TensorScope.Begin();
        var x = Random(6, 2, 1, Heads, Dim);
        var cache = Backend.Zeros([2, 4, Heads, Dim], DType.F32);
        Assert.That(() => RotaryOp.Forward(x, 4, 10000, Rows(0, -1)),
            Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("positions"));
        Assert.That(() => RotaryOp.Forward(x, 4, 10000, Rows(0)), Throws.ArgumentException.With.Property("ParamName").EqualTo("positions"));
        Assert.That(() => KvCacheOp.Write(x, cache, Rows(0, 4)),
            Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("positions").And.Message.Contains("row 1"));
        Assert.That(() => AttentionOp.Cached(x, cache, cache, Rows(1, 0)),
            Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("keyTimes"));
        Assert.That(() => AttentionOp.Cached(x, cache, cache, Rows(1, 5)),
            Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("keyTimes"));
        Assert.That(() => AttentionOp.Cached(x, cache, cache, Backend.Zeros([2], DType.F32)),
            Throws.ArgumentException.With.Message.Contains("I32"));
    }
}
