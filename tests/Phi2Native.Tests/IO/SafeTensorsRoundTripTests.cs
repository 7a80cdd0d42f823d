using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using NUnit.Framework;
using Phi2Native.IO;
using Phi2Native.Tensors;

namespace Phi2Native.Tests.IO;

/// <summary>Writer then reader, for every dtype the engine computes with, metadata, scalars and empty tensors.</summary>
[TestFixture]
public sealed class SafeTensorsRoundTripTests : SafeTensorsTestBase
{
    private static readonly float[] s_specials =
    [
        0f, -0f, 1f, -2.5f, 3.1415927f, 65504f, 1e-40f /* subnormal */, float.Epsilon,
        float.MaxValue, float.MinValue, float.PositiveInfinity, float.NegativeInfinity, float.NaN,
    ];

    [Test]
    public void F32_RoundTripsBitExactly()
    {
        string path = PathOf("f32.safetensors");
        var writer = new SafeTensorsWriter();
        writer.AddSingle("w", s_specials, [s_specials.Length]);
        writer.Save(path);

        using var file = SafeTensorsFile.Open(path);
        SafeTensorInfo info = file.Get("w");
        Assert.That(info.DTypeName, Is.EqualTo("F32"));
        Assert.That(info.DType, Is.EqualTo(DType.F32));
        Assert.That(info.Shape, Is.EqualTo(new long[] { s_specials.Length }));
        Assert.That(info.ElementCount, Is.EqualTo(s_specials.Length));
        Assert.That(info.ByteLength, Is.EqualTo(4 * s_specials.Length));
        Assert.That(Bits(file.ReadAsSingle("w")), Is.EqualTo(Bits(s_specials)));
        Assert.That(file.GetBytes("w").ToArray(), Is.EqualTo(MemoryMarshal.AsBytes(s_specials.AsSpan()).ToArray()));
    }

    [Test]
    public void F64_StoresFloatsExactly_AndNarrowsDoublesOnRead()
    {
        string path = PathOf("f64.safetensors");
        double[] doubles = [0.1, -1e300, 1e-50, 2.5];
        var writer = new SafeTensorsWriter();
        writer.AddSingle("from_float", s_specials, [s_specials.Length], DType.F64);
        writer.Add("raw", DType.F64, [2, 2], MemoryMarshal.AsBytes(doubles.AsSpan()));
        writer.Save(path);

        using var file = SafeTensorsFile.Open(path);
        Assert.That(file.Get("from_float").DTypeName, Is.EqualTo("F64"));
        double[] stored = MemoryMarshal.Cast<byte, double>(file.GetBytes("from_float")).ToArray();
        Assert.That(stored, Is.EqualTo(s_specials.Select(v => (double)v).ToArray()));
        Assert.That(Bits(file.ReadAsSingle("from_float")), Is.EqualTo(Bits(s_specials)));
        Assert.That(file.ReadAsSingle("raw"), Is.EqualTo(new[] { 0.1f, float.NegativeInfinity, 0f, 2.5f }));
    }

    [Test]
    public void I32_RoundTrips()
    {
        string path = PathOf("i32.safetensors");
        int[] ids = [0, 1, -1, int.MaxValue, int.MinValue, 50256];
        var writer = new SafeTensorsWriter();
        writer.AddInt32("ids", ids, [2, 3]);
        writer.Save(path);

        using var file = SafeTensorsFile.Open(path);
        Assert.That(file.Get("ids").DType, Is.EqualTo(DType.I32));
        Assert.That(file.ReadInt32("ids"), Is.EqualTo(ids));
        var span = new int[6];
        file.ReadInt32("ids", span);
        Assert.That(span, Is.EqualTo(ids));
    }

    [Test]
    public void RawAdd_OfF16AndBF16Bytes_IsWidenedExactlyOnRead()
    {
        string path = PathOf("raw16.safetensors");
        ushort[] halfBits = [0x3C00, 0xC100, 0x7BFF, 0x0001, 0x8000, 0x7C00];
        ushort[] bf16Bits = [0x3F80, 0xC020, 0x7F7F, 0x0001, 0x8000, 0xFF80];
        var writer = new SafeTensorsWriter();
        writer.Add("h", DType.F16, [6], MemoryMarshal.AsBytes(halfBits.AsSpan()));
        writer.Add("b", DType.BF16, [3, 2], MemoryMarshal.AsBytes(bf16Bits.AsSpan()));
        writer.Save(path);

        using var file = SafeTensorsFile.Open(path);
        Assert.That(file.ReadAsSingle("h"), Is.EqualTo(halfBits.Select(b => (float)BitConverter.UInt16BitsToHalf(b)).ToArray()));
        Assert.That(file.ReadAsSingle("h")[3], Is.EqualTo(MathF.Pow(2, -24)));
        Assert.That(file.ReadAsSingle("b"), Is.EqualTo(bf16Bits.Select(DTypes.BFloat16ToSingle).ToArray()));
        Assert.That(file.ReadAsSingle("b")[0..2], Is.EqualTo(new[] { 1f, -2.5f }));
    }

    [Test]
    public void Metadata_RoundTrips_AndIsEmptyWhenAbsent()
    {
        string withPath = PathOf("meta.safetensors"), withoutPath = PathOf("nometa.safetensors");
        var writer = new SafeTensorsWriter();
        writer.Metadata["format"] = "pt";
        writer.Metadata["note"] = "ünïcode \"quoted\" \\ slash";
        writer.Metadata["empty"] = "";
        writer.AddSingle("x", [1f], [1]);
        writer.Save(withPath);
        new SafeTensorsWriter().Save(withoutPath);

        using (var file = SafeTensorsFile.Open(withPath))
        {
            Assert.That(file.Metadata, Is.EquivalentTo(writer.Metadata));
            Assert.That(file.Contains("__metadata__"), Is.False, "metadata is not a tensor");
            Assert.That(file.Tensors.Select(t => t.Name), Is.EqualTo(new[] { "x" }));
        }
        using (var file = SafeTensorsFile.Open(withoutPath))
        {
            Assert.That(file.Metadata, Is.Empty);
            Assert.That(file.Tensors, Is.Empty);
        }
    }

    [Test]
    public void ZeroElementTensorsAndScalars_RoundTrip()
    {
        string path = PathOf("empty.safetensors");
        var writer = new SafeTensorsWriter();
        writer.AddSingle("before", [7f], []);
        writer.AddSingle("none", [], [0]);
        writer.AddSingle("rows0", [], [3, 0, 5], DType.BF16);
        writer.AddInt32("ids0", [], [0]);
        writer.Add("raw0", DType.F16, [0, 2], []);
        writer.AddSingle("after", [1f, 2f], [2]);
        writer.Save(path);

        using var file = SafeTensorsFile.Open(path);
        Assert.That(file.Get("before").Shape, Is.Empty);
        Assert.That(file.Get("before").ElementCount, Is.EqualTo(1));
        Assert.That(file.ReadAsSingle("before"), Is.EqualTo(new[] { 7f }));
        foreach (string name in new[] { "none", "rows0", "raw0" })
        {
            Assert.That(file.Get(name).ElementCount, Is.Zero, name);
            Assert.That(file.ReadAsSingle(name), Is.Empty, name);
            Assert.That(file.GetBytes(name).Length, Is.Zero, name);
        }
        Assert.That(file.Get("rows0").Shape, Is.EqualTo(new long[] { 3, 0, 5 }));
        Assert.That(file.ReadInt32("ids0"), Is.Empty);
        Assert.That(file.ReadAsSingle("after"), Is.EqualTo(new[] { 1f, 2f }));
    }

    [Test]
    public void Writer_KeepsAddOrder_ContiguousOffsets_AndSpacePaddedAlignedHeader()
    {
        string path = PathOf("layout.safetensors");
        var writer = new SafeTensorsWriter();
        writer.AddSingle("z.odd_f16", [1f, 2f, 3f], [3], DType.F16); // 6 bytes: the next tensor starts unaligned
        writer.AddSingle("a.f32", [4f, 5f], [2]);
        writer.AddInt32("m.i32", [9], [1]);
        writer.Save(path);

        byte[] bytes = File.ReadAllBytes(path);
        long headerLength = (long)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        Assert.That((8 + headerLength) % 8, Is.Zero, "data section starts 8-byte aligned");
        string header = Encoding.UTF8.GetString(bytes, 8, (int)headerLength);
        Assert.That(header.TrimEnd(' '), Does.EndWith("}"), "padding is spaces after the JSON");
        Assert.That(bytes.Length, Is.EqualTo(8 + headerLength + 6 + 8 + 4), "no gaps, nothing after the last tensor");

        using var file = SafeTensorsFile.Open(path);
        Assert.That(file.Tensors.Select(t => t.Name), Is.EqualTo(new[] { "z.odd_f16", "a.f32", "m.i32" }));
        Assert.That(file.Tensors.Select(t => (t.DataBegin, t.DataEnd)),
            Is.EqualTo(new[] { (0L, 6L), (6L, 14L), (14L, 18L) }));
        Assert.That(file.ReadAsSingle("z.odd_f16"), Is.EqualTo(new[] { 1f, 2f, 3f }));
        Assert.That(file.ReadAsSingle("a.f32"), Is.EqualTo(new[] { 4f, 5f }), "unaligned F32 reads correctly");
        Assert.That(file.ReadInt32("m.i32"), Is.EqualTo(new[] { 9 }));
    }

    [Test]
    public void StreamedEntry_WritesThroughCallback()
    {
        string path = PathOf("streamed.safetensors");
        var writer = new SafeTensorsWriter();
        writer.AddSingle("small", [1f], [1]);
        writer.AddStreamed("big", DType.F32, [4, 1000], stream =>
        {
            // Written in blocks, as a converter of a large checkpoint would.
            var block = new float[1000];
            for (int row = 0; row < 4; row++)
            {
                for (int i = 0; i < block.Length; i++) block[i] = row * 1000 + i;
                stream.Write(MemoryMarshal.AsBytes(block.AsSpan()));
            }
        });
        writer.Save(path);

        using var file = SafeTensorsFile.Open(path);
        float[] big = file.ReadAsSingle("big");
        Assert.That(big, Is.EqualTo(Enumerable.Range(0, 4000).Select(i => (float)i).ToArray()));
        Assert.That(file.ReadAsSingle("small"), Is.EqualTo(new[] { 1f }));
    }

    [Test]
    public void Save_OverwritesAnExistingFile()
    {
        string path = PathOf("over.safetensors");
        File.WriteAllText(path, "old content");
        var writer = new SafeTensorsWriter();
        writer.AddSingle("x", [3f], [1]);
        writer.Save(path);

        using var file = SafeTensorsFile.Open(path);
        Assert.That(file.ReadAsSingle("x"), Is.EqualTo(new[] { 3f }));
        Assert.That(FilesInFolder(), Is.EqualTo(new[] { "over.safetensors" }), "no temporary file left");
    }

    private static uint[] Bits(float[] values) => values.Select(BitConverter.SingleToUInt32Bits).ToArray();
}
