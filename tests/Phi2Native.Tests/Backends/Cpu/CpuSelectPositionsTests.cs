using System.Runtime.InteropServices;
using NUnit.Framework;
using Phi2Native.Backends.Cpu;
using Phi2Native.Tensors;

namespace Phi2Native.Tests.Backends.Cpu;

/// <summary>IBackend.SelectPositions on the CPU backend against a plain loop over the definition output[b, k] = x[b, positions[b, k]].</summary>
[TestFixture]
public class CpuSelectPositionsTests
{
    private static readonly CpuBackend Backend = new(poisonNewMemory: true);

    private static Tensor Ids(int[] values, params int[] shape) =>
        Backend.FromBytes(MemoryMarshal.AsBytes(values.AsSpan()), DType.I32, shape, DType.I32);

    /// <summary>The definition, on flat arrays: x [B, T, rest] -> [B, K, rest].</summary>
    private static T[] Reference<T>(T[] x, int batch, int time, int rest, int[] positions, int count)
    {
        var output = new T[batch * count * rest];
        for (int b = 0; b < batch; b++)
            for (int k = 0; k < count; k++)
                for (int i = 0; i < rest; i++)
                    output[(b * count + k) * rest + i] = x[(b * time + positions[b * count + k]) * rest + i];
        return output;
    }

    // [B, T, C] with one position per row (the last-position case), several positions, repeats, and [B, T, H, D].
    [TestCase(new[] { 3, 7, 5 }, new[] { 6, 6, 6 }, 1)]
    [TestCase(new[] { 3, 7, 5 }, new[] { 0, 4, 2 }, 1)]
    [TestCase(new[] { 2, 9, 3 }, new[] { 8, 0, 3, 3, 1, 2 }, 3)]
    [TestCase(new[] { 2, 4, 3, 2 }, new[] { 1, 3 }, 1)]
    [TestCase(new[] { 1, 1, 4 }, new[] { 0 }, 1)]
    public void EqualsAPlainLoop(int[] shape, int[] positions, int count)
    {
        int batch = shape[0], time = shape[1], rest = shape.Skip(2).Aggregate(1, (a, b) => a * b);
        var values = Enumerable.Range(0, batch * time * rest).Select(i => (float)Math.Sin(i + 0.5)).ToArray();
        using var x = Backend.FromBytes(MemoryMarshal.AsBytes(values.AsSpan()), DType.F32, shape, DType.F32);
        using var index = Ids(positions, batch, count);
        using var selected = Backend.SelectPositions(x, index);
        Assert.That(selected.Shape.ToArray(), Is.EqualTo(new[] { batch, count }.Concat(shape.Skip(2)).ToArray()));
        Assert.That(selected.ToArray<float>(), Is.EqualTo(Reference(values, batch, time, rest, positions, count)));
    }

    [TestCase(DType.F64)]
    [TestCase(DType.BF16)]
    [TestCase(DType.I32)]
    public void CopiesAnyDTypeBitForBit(DType dtype)
    {
        int batch = 2, time = 5, rest = 3;
        var ids = Enumerable.Range(0, batch * time * rest).Select(i => i * 7 - 11).ToArray();
        using var x = dtype == DType.I32 ? Ids(ids, batch, time, rest) : Backend.Cast(Backend.FromBytes(
            MemoryMarshal.AsBytes(ids.Select(i => (float)i).ToArray().AsSpan()), DType.F32, [batch, time, rest], DType.F32), dtype);
        var raw = new byte[x.ElementCount * dtype.SizeInBytes()];
        Backend.CopyToHost(x, raw);
        int[] positions = [4, 1];
        using var selected = Backend.SelectPositions(x, Ids(positions, batch, 1));
        var actual = new byte[selected.ElementCount * dtype.SizeInBytes()];
        Backend.CopyToHost(selected, actual);
        int rowBytes = rest * dtype.SizeInBytes();
        Assert.That(actual, Is.EqualTo(Reference(raw, batch, time, rowBytes, positions, 1)));
    }

    [Test]
    public void BadArgumentsNameThemselves()
    {
        using var scope = TensorScope.Begin();
        var x = Backend.Zeros([2, 3, 4], DType.F32);
        Assert.That(() => Backend.SelectPositions(x, Ids([0, 3], 2, 1)),
            Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contains("positions[1, 0] = 3"));
        Assert.That(() => Backend.SelectPositions(x, Ids([0, -1], 2, 1)), Throws.InstanceOf<ArgumentOutOfRangeException>());
        Assert.That(() => Backend.SelectPositions(x, Ids([0, 1, 2], 3, 1)),
            Throws.ArgumentException.With.Property(nameof(ArgumentException.ParamName)).EqualTo("positions"));
        Assert.That(() => Backend.SelectPositions(x, Ids([0, 1], 2)), Throws.ArgumentException.With.Message.Contains("[B = 2, K]"));
        Assert.That(() => Backend.SelectPositions(Backend.Zeros([4], DType.F32), Ids([0], 1, 1)),
            Throws.ArgumentException.With.Property(nameof(ArgumentException.ParamName)).EqualTo("x"));
        Assert.That(() => Backend.SelectPositions(x, Backend.Zeros([2, 1], DType.F32)), Throws.ArgumentException.With.Message.Contains("I32"));
    }
}
