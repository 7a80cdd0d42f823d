using System.Runtime.InteropServices;
using NUnit.Framework;
using Phi2Native.IO;
using Phi2Native.Tensors;

namespace Phi2Native.Tests.IO;

/// <summary>
/// Narrowing on write (F32 -> F16 / BF16, round to nearest, ties to even) and widening on read, pinned to the
/// exact bit patterns IEEE 754 and PyTorch give for each value.
/// </summary>
[TestFixture]
public sealed class SafeTensorsConversionTests : SafeTensorsTestBase
{
    // (input float bits, expected F16 bits). Ties are halfway between two representable halves.
    private static readonly (uint Input, ushort Expected, string Why)[] s_f16Cases =
    [
        (Bits(1f), 0x3C00, "1.0"),
        (Bits(-2.5f), 0xC100, "-2.5"),
        (Bits(65504f), 0x7BFF, "largest finite half"),
        (Bits(65519f), 0x7BFF, "below the tie, rounds down to 65504"),
        (Bits(65520f), 0x7C00, "tie between 65504 (odd) and 65536 (even): to infinity"),
        (Bits(1e6f), 0x7C00, "overflow"),
        (Bits(-1e6f), 0xFC00, "negative overflow"),
        (Bits(MathF.Pow(2, -14)), 0x0400, "smallest normal"),
        (Bits(1023 * MathF.Pow(2, -24)), 0x03FF, "largest subnormal"),
        (Bits(MathF.Pow(2, -24)), 0x0001, "smallest subnormal"),
        (Bits(MathF.Pow(2, -25)), 0x0000, "tie between 0 (even) and the smallest subnormal"),
        (Bits(MathF.Pow(2, -25) * 1.0001f), 0x0001, "just above that tie"),
        (Bits(3 * MathF.Pow(2, -25)), 0x0002, "tie between subnormals 1 and 2: to 2"),
        (Bits(1f + MathF.Pow(2, -11)), 0x3C00, "tie between 1.0 (even) and the next half"),
        (Bits(1f + 3 * MathF.Pow(2, -11)), 0x3C02, "tie between 0x3C01 and 0x3C02 (even)"),
        (Bits(-0f), 0x8000, "negative zero keeps its sign"),
        (Bits(float.PositiveInfinity), 0x7C00, "+inf"),
        (Bits(float.NegativeInfinity), 0xFC00, "-inf"),
    ];

    // (input float bits, expected BF16 bits).
    private static readonly (uint Input, ushort Expected, string Why)[] s_bf16Cases =
    [
        (Bits(1f), 0x3F80, "1.0"),
        (Bits(-2.5f), 0xC020, "-2.5"),
        (Bits(65504f), 0x4780, "65504 rounds up to 65536"),
        (0x3F808000, 0x3F80, "tie, lower neighbour even: down"),
        (0x3F818000, 0x3F82, "tie, upper neighbour even: up"),
        (0x3F808001, 0x3F81, "just above the tie: up"),
        (0x3F807FFF, 0x3F80, "just below the tie: down"),
        (0xBF818000, 0xBF82, "negative tie: magnitude to even"),
        (0x7F7FFFFF, 0x7F80, "float.MaxValue rounds to infinity"),
        (0x00018000, 0x0002, "subnormal tie, to even"),
        (0x00008000, 0x0000, "subnormal tie to zero"),
        (0x00000001, 0x0000, "float.Epsilon rounds to zero"),
        (0x00010000, 0x0001, "exact subnormal"),
        (Bits(-0f), 0x8000, "negative zero"),
        (Bits(float.PositiveInfinity), 0x7F80, "+inf"),
        (Bits(float.NegativeInfinity), 0xFF80, "-inf"),
    ];

    [Test]
    public void F16_NarrowsToNearestEven_AndWidensBack()
    {
        // Repeated so the conversion runs through its vectorized body as well as its scalar tail.
        const int Copies = 9;
        float[] inputs = Enumerable.Repeat(s_f16Cases, Copies).SelectMany(c => c)
            .Select(c => BitConverter.UInt32BitsToSingle(c.Input)).ToArray();
        using SafeTensorsFile file = SaveAndOpen("f16.safetensors", inputs, DType.F16);

        ushort[] stored = MemoryMarshal.Cast<byte, ushort>(file.GetBytes("t")).ToArray();
        float[] widened = file.ReadAsSingle("t");
        Assert.Multiple(() =>
        {
            for (int i = 0; i < inputs.Length; i++)
            {
                var (_, expectedBits, why) = s_f16Cases[i % s_f16Cases.Length];
                Assert.That(stored[i], Is.EqualTo(expectedBits), $"{why} (element {i}): stored bits 0x{stored[i]:X4}");
                float expected = (float)BitConverter.UInt16BitsToHalf(expectedBits);
                Assert.That(Bits(widened[i]), Is.EqualTo(Bits(expected)), $"{why} (element {i}): widened");
            }
        });
        Assert.That(widened[0], Is.EqualTo(1f));
        Assert.That(widened[1], Is.EqualTo(-2.5f));
        Assert.That(widened[2], Is.EqualTo(65504f));
        Assert.That(widened[9], Is.EqualTo(MathF.Pow(2, -24)), "subnormal widens exactly");
    }

    [Test]
    public void BF16_NarrowsToNearestEven_AndWidensBack()
    {
        float[] inputs = s_bf16Cases.Select(c => BitConverter.UInt32BitsToSingle(c.Input)).ToArray();
        using SafeTensorsFile file = SaveAndOpen("bf16.safetensors", inputs, DType.BF16);

        ushort[] stored = MemoryMarshal.Cast<byte, ushort>(file.GetBytes("t")).ToArray();
        float[] widened = file.ReadAsSingle("t");
        Assert.Multiple(() =>
        {
            for (int i = 0; i < s_bf16Cases.Length; i++)
            {
                Assert.That(stored[i], Is.EqualTo(s_bf16Cases[i].Expected), $"{s_bf16Cases[i].Why}: stored bits 0x{stored[i]:X4}");
                // Widening bf16 is exact: the bits become the top half of a float.
                Assert.That(Bits(widened[i]), Is.EqualTo((uint)s_bf16Cases[i].Expected << 16), $"{s_bf16Cases[i].Why}: widened");
            }
        });
        Assert.That(widened[0], Is.EqualTo(1f));
        Assert.That(widened[1], Is.EqualTo(-2.5f));
    }

    [TestCase(DType.F16)]
    [TestCase(DType.BF16)]
    [TestCase(DType.F64)]
    [TestCase(DType.F32)]
    public void NaN_StaysNaN_IncludingPayloadsInTheLowBits(DType storeAs)
    {
        // 0x7F800001 has its only payload bit in the half that F16/BF16 drop: truncating would give infinity.
        float[] patterns = [float.NaN, -float.NaN, BitConverter.UInt32BitsToSingle(0x7F800001), BitConverter.UInt32BitsToSingle(0xFFFFFFFF)];
        // Repeated past any vector width so both the vectorized and the scalar conversion paths see them.
        float[] nans = Enumerable.Repeat(patterns, 17).SelectMany(p => p).ToArray();
        using SafeTensorsFile file = SaveAndOpen("nan.safetensors", nans, storeAs);

        float[] widened = file.ReadAsSingle("t");
        Assert.That(widened.All(float.IsNaN), Is.True, string.Join(", ", widened.Select(v => $"0x{Bits(v):X8}")));
        if (storeAs is DType.F16 or DType.BF16)
        {
            ushort[] stored = MemoryMarshal.Cast<byte, ushort>(file.GetBytes("t")).ToArray();
            ushort exponent = storeAs == DType.F16 ? (ushort)0x7C00 : (ushort)0x7F80;
            Assert.That(stored.All(b => (b & exponent) == exponent && (b & ~exponent & 0x7FFF) != 0), Is.True,
                "exponent all ones and a non-zero mantissa");
        }
    }

    private SafeTensorsFile SaveAndOpen(string fileName, float[] values, DType storeAs)
    {
        string path = PathOf(fileName);
        var writer = new SafeTensorsWriter();
        writer.AddSingle("t", values, [values.Length], storeAs);
        writer.Save(path);
        SafeTensorsFile file = SafeTensorsFile.Open(path);
        Assert.That(file.Get("t").DTypeName, Is.EqualTo(storeAs.SafeTensorsName()));
        return file;
    }

    private static uint Bits(float value) => BitConverter.SingleToUInt32Bits(value);
}
