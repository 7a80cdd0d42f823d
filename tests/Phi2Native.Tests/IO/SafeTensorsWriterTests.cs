using System.Runtime.InteropServices;
using NUnit.Framework;
using Phi2Native.IO;
using Phi2Native.Tensors;

namespace Phi2Native.Tests.IO;

/// <summary>The writer's argument checks and its atomic save.</summary>
[TestFixture]
public sealed class SafeTensorsWriterTests : SafeTensorsTestBase
{
    [Test]
    public void DuplicateName_IsRejected_WhicheverAddIsUsed()
    {
        var writer = new SafeTensorsWriter();
        writer.AddSingle("w", [1f], [1]);
        foreach (TestDelegate add in new TestDelegate[]
                 {
                     () => writer.AddSingle("w", [1f], [1]),
                     () => writer.AddInt32("w", [1], [1]),
                     () => writer.Add("w", DType.F32, [1], new byte[4]),
                     () => writer.AddStreamed("w", DType.F32, [1], s => s.Write(new byte[4])),
                 })
        {
            var e = Assert.Throws<ArgumentException>(add)!;
            Assert.That(e.Message, Does.Contain("'w'").And.Contain("already added"));
        }
        Assert.That(writer.Count, Is.EqualTo(1));
    }

    [Test]
    public void ReservedAndEmptyNames_AreRejected()
    {
        var writer = new SafeTensorsWriter();
        var reserved = Assert.Throws<ArgumentException>(() => writer.AddSingle("__metadata__", [1f], [1]))!;
        Assert.That(reserved.Message, Does.Contain("'__metadata__'"));
        Assert.Throws<ArgumentException>(() => writer.AddSingle("", [1f], [1]));
        Assert.Throws<ArgumentNullException>(() => writer.AddSingle(null!, [1f], [1]));
    }

    [Test]
    public void DataLengthNotMatchingShape_IsRejected()
    {
        var writer = new SafeTensorsWriter();
        var bytes = Assert.Throws<ArgumentException>(() => writer.Add("raw", DType.F16, [2, 3], new byte[10]))!;
        Assert.That(bytes.Message, Does.Contain("'raw'").And.Contain("10 bytes").And.Contain("needs 12"));
        var floats = Assert.Throws<ArgumentException>(() => writer.AddSingle("f", new float[5], [2, 3], DType.BF16))!;
        Assert.That(floats.Message, Does.Contain("'f'").And.Contain("5 values").And.Contain("6 elements"));
        var ints = Assert.Throws<ArgumentException>(() => writer.AddInt32("i", new int[7], [2, 3]))!;
        Assert.That(ints.Message, Does.Contain("'i'").And.Contain("7 values"));
        var scalar = Assert.Throws<ArgumentException>(() => writer.AddSingle("s", [], []))!;
        Assert.That(scalar.Message, Does.Contain("'s'").And.Contain("1 elements"), "a scalar holds one value");
        Assert.That(writer.Count, Is.Zero, "nothing rejected was added");
    }

    [Test]
    public void NegativeOrOverflowingShape_IsRejected()
    {
        var writer = new SafeTensorsWriter();
        var negative = Assert.Throws<ArgumentException>(() => writer.AddSingle("n", [], [2, -1]))!;
        Assert.That(negative.Message, Does.Contain("'n'").And.Contain("negative"));
        var overflow = Assert.Throws<ArgumentException>(() =>
            writer.AddStreamed("o", DType.F64, [1L << 40, 1L << 30], _ => { }))!;
        Assert.That(overflow.Message, Does.Contain("'o'").And.Contain("overflows"));
    }

    [Test]
    public void StoringFloatsAsI32_IsRejected()
    {
        var e = Assert.Throws<ArgumentException>(() => new SafeTensorsWriter().AddSingle("w", [1f], [1], DType.I32))!;
        Assert.That(e.Message, Does.Contain("'w'"));
    }

    [Test]
    public void ShapeAndData_AreCopiedWhenAdded()
    {
        long[] shape = [2];
        float[] values = [1f, 2f];
        byte[] raw = [0, 0, 0x80, 0x3F];
        var writer = new SafeTensorsWriter();
        writer.AddSingle("w", values, shape);
        writer.Add("r", DType.F32, [1], raw);
        shape[0] = 99;
        values[0] = 42f;
        raw[3] = 0;
        string path = PathOf("copied.safetensors");
        writer.Save(path);

        using var file = SafeTensorsFile.Open(path);
        Assert.That(file.Get("w").Shape, Is.EqualTo(new long[] { 2 }));
        Assert.That(file.ReadAsSingle("w"), Is.EqualTo(new[] { 1f, 2f }));
        Assert.That(file.ReadAsSingle("r"), Is.EqualTo(new[] { 1f }));
    }

    [Test]
    public void Save_IsDeterministic()
    {
        var writer = new SafeTensorsWriter();
        writer.Metadata["z"] = "last";
        writer.Metadata["a"] = "first";
        writer.AddSingle("w", [1f, 2f, 3f], [3], DType.F16);
        writer.Save(PathOf("one.safetensors"));
        writer.Save(PathOf("two.safetensors"));
        Assert.That(File.ReadAllBytes(PathOf("two.safetensors")), Is.EqualTo(File.ReadAllBytes(PathOf("one.safetensors"))));
    }

    [Test]
    public void NullMetadataValue_FailsSave_AndWritesNothing()
    {
        var writer = new SafeTensorsWriter();
        writer.Metadata["format"] = null!;
        var e = Assert.Throws<ArgumentException>(() => writer.Save(PathOf("meta.safetensors")))!;
        Assert.That(e.Message, Does.Contain("'format'"));
        Assert.That(FilesInFolder(), Is.Empty);
    }

    [Test]
    public void CallbackThrowingMidway_LeavesTheExistingFileIntact_AndNoTempFile()
    {
        string path = PathOf("model.safetensors");
        var old = new SafeTensorsWriter();
        old.AddSingle("w", [1f, 2f], [2]);
        old.Save(path);
        byte[] before = File.ReadAllBytes(path);

        var writer = new SafeTensorsWriter();
        writer.AddSingle("first", new float[1000], [1000]);
        var boom = new IOException("disk on fire");
        writer.AddStreamed("big", DType.F32, [1000], stream =>
        {
            stream.Write(new byte[2000]); // half of it, then fail
            throw boom;
        });
        writer.AddSingle("never", [1f], [1]);

        var thrown = Assert.Throws<IOException>(() => writer.Save(path));
        Assert.That(thrown, Is.SameAs(boom), "the callback's own exception reaches the caller");
        Assert.That(File.ReadAllBytes(path), Is.EqualTo(before), "the old file is untouched");
        Assert.That(FilesInFolder(), Is.EqualTo(new[] { "model.safetensors" }), "no temporary file left behind");
        using var file = SafeTensorsFile.Open(path);
        Assert.That(file.ReadAsSingle("w"), Is.EqualTo(new[] { 1f, 2f }));
    }

    [Test]
    public void CallbackThrowing_WithNoExistingFile_CreatesNothing()
    {
        var writer = new SafeTensorsWriter();
        writer.AddStreamed("w", DType.F32, [4], _ => throw new InvalidDataException("source went away"));
        Assert.Throws<InvalidDataException>(() => writer.Save(PathOf("new.safetensors")));
        Assert.That(FilesInFolder(), Is.Empty);
    }

    [TestCase(15, "wrote 15 bytes")]
    [TestCase(0, "wrote 0 bytes")]
    [TestCase(17, "more than the 16 bytes")]
    public void CallbackWritingTheWrongAmount_FailsSave_AndKeepsTheOldFile(int bytesWritten, string detail)
    {
        string path = PathOf("model.safetensors");
        File.WriteAllBytes(path, [1, 2, 3]);
        var writer = new SafeTensorsWriter();
        writer.AddStreamed("w", DType.F32, [4], stream => stream.Write(new byte[bytesWritten]));

        var e = Assert.Throws<InvalidOperationException>(() => writer.Save(path))!;
        Assert.That(e.Message, Does.Contain("'w'").And.Contain(detail));
        Assert.That(File.ReadAllBytes(path), Is.EqualTo(new byte[] { 1, 2, 3 }));
        Assert.That(FilesInFolder(), Is.EqualTo(new[] { "model.safetensors" }));
    }

    [Test]
    public void StreamedCallback_GetsAWriteOnlyStream_AndCanWriteByteByByte()
    {
        string path = PathOf("bytes.safetensors");
        var writer = new SafeTensorsWriter();
        writer.AddStreamed("b", DType.BF16, [2], stream =>
        {
            Assert.That((stream.CanWrite, stream.CanRead, stream.CanSeek), Is.EqualTo((true, false, false)));
            foreach (byte b in new byte[] { 0x80, 0x3F, 0x20, 0xC0 }) stream.WriteByte(b);
            stream.Flush();
        });
        writer.Save(path);
        using var file = SafeTensorsFile.Open(path);
        Assert.That(file.ReadAsSingle("b"), Is.EqualTo(new[] { 1f, -2.5f }));
    }

    [Test]
    public void SaveIntoAMissingFolder_Fails_AndCreatesNothing()
    {
        var writer = new SafeTensorsWriter();
        writer.AddSingle("w", [1f], [1]);
        Assert.Throws<DirectoryNotFoundException>(() => writer.Save(Path.Combine(Folder, "absent", "x.safetensors")));
        Assert.That(Directory.GetFileSystemEntries(Folder), Is.Empty);
    }

    [Test]
    public void SavingOverAnOpenFile_LeavesTheOpenReaderOnTheOldContents()
    {
        // The rename replaces the directory entry, not the bytes a reader has mapped (POSIX semantics; Windows
        // refuses to replace a mapped file, which the atomic save then reports without harming it).
        Assume.That(OperatingSystem.IsWindows(), Is.False, "POSIX rename semantics");
        string path = PathOf("live.safetensors");
        var first = new SafeTensorsWriter();
        first.AddSingle("w", [1f, 2f], [2]);
        first.Save(path);

        using var reader = SafeTensorsFile.Open(path);
        var second = new SafeTensorsWriter();
        second.AddSingle("w", [3f, 4f, 5f], [3]);
        second.Save(path);

        Assert.That(reader.ReadAsSingle("w"), Is.EqualTo(new[] { 1f, 2f }));
        using var fresh = SafeTensorsFile.Open(path);
        Assert.That(fresh.ReadAsSingle("w"), Is.EqualTo(new[] { 3f, 4f, 5f }));
        Assert.That(MemoryMarshal.Cast<byte, float>(fresh.GetBytes("w")).ToArray(), Is.EqualTo(new[] { 3f, 4f, 5f }));
    }
}
