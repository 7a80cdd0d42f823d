using System.Runtime.InteropServices;
using NUnit.Framework;
using Phi2Native.IO;
using Phi2Native.Tensors;

namespace Phi2Native.Tests.IO;

/// <summary>The reader's API: lookups, typed reads and their errors, foreign dtypes, large tensors, disposal.</summary>
[TestFixture]
public sealed class SafeTensorsFileTests : SafeTensorsTestBase
{
    // Every dtype the format defines that the engine only lists, with its element size.
    private static readonly object[] s_foreignDTypes =
    [
        new object[] { "BOOL", 1 }, new object[] { "U8", 1 }, new object[] { "I8", 1 }, new object[] { "I16", 2 },
        new object[] { "U16", 2 }, new object[] { "U32", 4 }, new object[] { "I64", 8 }, new object[] { "U64", 8 },
        new object[] { "F8_E4M3", 1 }, new object[] { "F8_E5M2", 1 },
    ];

    [Test]
    public void ReadsAFileLaidOutAsTheReferenceWriterDoes()
    {
        // What Python's safetensors.torch.save_file writes for {"a": fp16 [2,2], "b": int64 [3]} with metadata:
        // offsets in data order, header padded with spaces to a multiple of 8, no gaps.
        const string Header = """{"__metadata__":{"format":"pt"},"a":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]},"b":{"dtype":"I64","shape":[3],"data_offsets":[8,32]}}""";
        string padded = Header + new string(' ', (8 - Header.Length % 8) % 8);
        ushort[] a = [0x3C00, 0x4000, 0xC100, 0x7BFF]; // 1, 2, -2.5, 65504
        long[] b = [1, -2, long.MaxValue];
        byte[] data = [.. MemoryMarshal.AsBytes(a.AsSpan()), .. MemoryMarshal.AsBytes(b.AsSpan())];
        string path = Craft("reference.safetensors", padded, data);

        using var file = SafeTensorsFile.Open(path);
        Assert.That(file.FilePath, Is.EqualTo(path));
        Assert.That(file.Metadata, Is.EquivalentTo(new Dictionary<string, string> { ["format"] = "pt" }));
        Assert.That(file.Tensors.Select(t => t.Name), Is.EqualTo(new[] { "a", "b" }));
        SafeTensorInfo infoA = file.Get("a");
        Assert.That(infoA, Is.EqualTo(infoA with { }), "records compare by value");
        Assert.That((infoA.DTypeName, infoA.DType, infoA.ElementCount, infoA.DataBegin, infoA.DataEnd),
            Is.EqualTo(("F16", (DType?)DType.F16, 4L, 0L, 8L)));
        Assert.That(infoA.Shape, Is.EqualTo(new long[] { 2, 2 }));
        Assert.That(infoA.ShapeText, Is.EqualTo("[2, 2]"));
        Assert.That(file.ReadAsSingle("a"), Is.EqualTo(new[] { 1f, 2f, -2.5f, 65504f }));
        SafeTensorInfo infoB = file.Get("b");
        Assert.That((infoB.DTypeName, infoB.DType, infoB.ElementCount, infoB.DataBegin, infoB.DataEnd),
            Is.EqualTo(("I64", (DType?)null, 3L, 8L, 32L)));
        Assert.That(MemoryMarshal.Cast<byte, long>(file.GetBytes("b")).ToArray(), Is.EqualTo(b));
    }

    [TestCaseSource(nameof(s_foreignDTypes))]
    public void ForeignDType_IsValidatedAndListed_ButTypedReadsRefuseIt(string dtypeName, int size)
    {
        byte[] data = Enumerable.Range(1, 3 * size).Select(i => (byte)i).ToArray();
        string path = Craft("foreign.safetensors",
            $$$"""{"f":{"dtype":"{{{dtypeName}}}","shape":[3],"data_offsets":[0,{{{3 * size}}}]},"x":{"dtype":"F32","shape":[1],"data_offsets":[{{{3 * size}}},{{{3 * size + 4}}}]}}""",
            [.. data, 0, 0, 0x80, 0x3F]);

        using var file = SafeTensorsFile.Open(path);
        SafeTensorInfo info = file.Get("f");
        Assert.That((info.DTypeName, info.DType, info.ElementCount, info.ByteLength), Is.EqualTo((dtypeName, (DType?)null, 3L, 3L * size)));
        Assert.That(file.GetBytes("f").ToArray(), Is.EqualTo(data), "raw bytes stay available");
        Assert.That(file.ReadAsSingle("x"), Is.EqualTo(new[] { 1f }), "other tensors read normally");

        foreach (TestDelegate read in new TestDelegate[]
                 {
                     () => file.ReadAsSingle("f"),
                     () => file.ReadAsSingle("f", new float[3]),
                     () => file.ReadInt32("f"),
                     () => file.ReadInt32("f", new int[3]),
                 })
        {
            var e = Assert.Throws<NotSupportedException>(read)!;
            Assert.That(e.Message, Does.StartWith(path).And.Contain("'f'").And.Contain(dtypeName));
        }
    }

    [Test]
    public void MissingTensor_NamesFileAndTensor()
    {
        string path = SaveOne("one.safetensors");
        using var file = SafeTensorsFile.Open(path);

        Assert.That(file.Contains("nope"), Is.False);
        Assert.That(file.Contains("w"), Is.True);
        Assert.That(file.TryGet("nope", out _), Is.False);
        Assert.That(file.TryGet("w", out SafeTensorInfo? found) && found.Name == "w", Is.True);
        foreach (TestDelegate call in new TestDelegate[]
                 {
                     () => file.Get("nope"), () => file.GetBytes("nope"), () => file.ReadAsSingle("nope"),
                     () => file.ReadAsSingle("nope", new float[1]), () => file.ReadInt32("nope", new int[1]),
                 })
        {
            var e = Assert.Throws<KeyNotFoundException>(call)!;
            Assert.That(e.Message, Does.StartWith(path).And.Contain("'nope'"));
        }
    }

    [TestCase(5)]
    [TestCase(7)]
    [TestCase(0)]
    public void ReadAsSingle_DestinationOfTheWrongLength_IsRejected(int length)
    {
        string path = SaveOne("len.safetensors"); // "w" has 6 elements
        using var file = SafeTensorsFile.Open(path);
        var e = Assert.Throws<ArgumentException>(() => file.ReadAsSingle("w", new float[length]))!;
        Assert.That(e.Message, Does.StartWith(path).And.Contain("'w'").And.Contain("6 elements").And.Contain($"holds {length}"));
        Assert.That(e.ParamName, Is.EqualTo("destination"));
    }

    [Test]
    public void ReadInt32_DestinationOfTheWrongLength_IsRejected()
    {
        string path = PathOf("ids.safetensors");
        var writer = new SafeTensorsWriter();
        writer.AddInt32("ids", [1, 2, 3], [3]);
        writer.Save(path);
        using var file = SafeTensorsFile.Open(path);
        var e = Assert.Throws<ArgumentException>(() => file.ReadInt32("ids", new int[2]))!;
        Assert.That(e.Message, Does.StartWith(path).And.Contain("'ids'"));
    }

    [Test]
    public void TypedReads_OfTheOtherKind_AreRejected()
    {
        string path = PathOf("kinds.safetensors");
        var writer = new SafeTensorsWriter();
        writer.AddInt32("ids", [1, 2], [2]);
        writer.AddSingle("w", [1f, 2f], [2], DType.BF16);
        writer.Save(path);
        using var file = SafeTensorsFile.Open(path);

        var notFloat = Assert.Throws<InvalidOperationException>(() => file.ReadAsSingle("ids"))!;
        Assert.That(notFloat.Message, Does.StartWith(path).And.Contain("'ids'").And.Contain("I32"));
        var notInt = Assert.Throws<InvalidOperationException>(() => file.ReadInt32("w", new int[2]))!;
        Assert.That(notInt.Message, Does.StartWith(path).And.Contain("'w'").And.Contain("BF16"));
    }

    [TestCase(DType.F16)]
    [TestCase(DType.BF16)]
    [TestCase(DType.F32)]
    [TestCase(DType.F64)]
    public void LargeTensor_IsReadAcrossChunkBoundaries(DType storeAs)
    {
        // Just over 2^20 elements, the reader's chunk size, so the last chunk is a short one.
        const int Count = (1 << 20) + 3;
        float[] values = new float[Count];
        for (int i = 0; i < Count; i++) values[i] = i % 251 - 125; // small integers: exact even in BF16
        string path = PathOf("large.safetensors");
        var writer = new SafeTensorsWriter();
        writer.AddSingle("w", values, [Count], storeAs);
        writer.AddInt32("ids", Enumerable.Range(0, Count).ToArray(), [Count]);
        writer.Save(path);

        using var file = SafeTensorsFile.Open(path);
        Assert.That(file.ReadAsSingle("w"), Is.EqualTo(values));
        Assert.That(file.ReadInt32("ids"), Is.EqualTo(Enumerable.Range(0, Count).ToArray()));
    }

    [Test]
    public void Dispose_ReleasesTheMapping_AndLaterUseThrows()
    {
        string path = SaveOne("disposed.safetensors");
        var file = SafeTensorsFile.Open(path);
        if (OperatingSystem.IsLinux())
            Assert.That(File.ReadAllText("/proc/self/maps"), Does.Contain(path), "mapped while open");

        file.Dispose();
        file.Dispose(); // a second Dispose is harmless

        if (OperatingSystem.IsLinux())
            Assert.That(File.ReadAllText("/proc/self/maps"), Does.Not.Contain(path), "unmapped after Dispose");
        Assert.That(file.FilePath, Is.EqualTo(path), "the path stays readable for messages");
        foreach (TestDelegate call in new TestDelegate[]
                 {
                     () => _ = file.Tensors, () => _ = file.Metadata, () => file.Contains("w"), () => file.TryGet("w", out _),
                     () => file.Get("w"), () => file.GetBytes("w"), () => file.ReadAsSingle("w"),
                     () => file.ReadAsSingle("w", new float[6]), () => file.ReadInt32("w", new int[6]),
                 })
        {
            Assert.Throws<ObjectDisposedException>(call);
        }
        File.Delete(path);
    }

    [Test]
    public void Open_MissingFile_IsAnIOError()
    {
        Assert.Throws<FileNotFoundException>(() => SafeTensorsFile.Open(PathOf("absent.safetensors")));
    }

    [Test]
    public void Open_ReportsTheFullPath_ForARelativeOne()
    {
        string path = Craft("rel.safetensors", "[]");
        string relative = Path.GetRelativePath(Environment.CurrentDirectory, path);
        var e = Assert.Throws<SafeTensorsFormatException>(() => SafeTensorsFile.Open(relative))!;
        Assert.That(e.FilePath, Is.EqualTo(path));
    }

    private string SaveOne(string fileName)
    {
        string path = PathOf(fileName);
        var writer = new SafeTensorsWriter();
        writer.AddSingle("w", [1f, 2f, 3f, 4f, 5f, 6f], [2, 3]);
        writer.Save(path);
        return path;
    }
}
