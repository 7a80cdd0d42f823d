using System.Buffers.Binary;
using System.Text;
using NUnit.Framework;
using Phi2Native.IO;

namespace Phi2Native.Tests.IO;

/// <summary>
/// One test per way a safetensors file can be broken. Each writes the bad bytes by hand and checks that
/// <see cref="SafeTensorsFile.Open"/> fails with <see cref="SafeTensorsFormatException"/> whose message names
/// the file and, where there is one, the tensor.
/// </summary>
[TestFixture]
public sealed class SafeTensorsCorruptionTests : SafeTensorsTestBase
{
    // A well-formed entry: 2 F32 values in data bytes [0, 8).
    private const string GoodEntry = """{"dtype":"F32","shape":[2],"data_offsets":[0,8]}""";
    private static readonly byte[] s_eightBytes = new byte[8];

    [TestCase(0)]
    [TestCase(7)]
    public void FileShorterThan8Bytes(int length)
    {
        string path = WriteRaw("short.safetensors", new byte[length]);
        AssertFormatError(path, null, "shorter than the 8-byte");
    }

    [Test]
    public void HeaderLengthZero()
    {
        string path = Craft("zero.safetensors", Array.Empty<byte>(), s_eightBytes);
        AssertFormatError(path, null, "header length is 0");
    }

    [TestCase(100_000_001UL)]
    [TestCase(ulong.MaxValue)]
    public void HeaderLengthOver100MB(ulong headerLength)
    {
        byte[] bytes = new byte[64];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, headerLength);
        "{}"u8.CopyTo(bytes.AsSpan(8));
        string path = WriteRaw("huge.safetensors", bytes);
        AssertFormatError(path, null, "100000000-byte limit");
    }

    [Test]
    public void HeaderLengthBeyondEndOfFile()
    {
        byte[] bytes = new byte[8 + 10];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, 11); // one byte more than there is
        "{}        "u8.CopyTo(bytes.AsSpan(8));
        string path = WriteRaw("past.safetensors", bytes);
        AssertFormatError(path, null, "past the end of the file");
    }

    [Test]
    public void HeaderNotUtf8()
    {
        // 0xFF never occurs in UTF-8; here it sits inside the tensor name.
        byte[] header = [.. "{\"w"u8, 0xFF, .. "\":"u8, .. Encoding.UTF8.GetBytes(GoodEntry), (byte)'}'];
        string path = Craft("latin1.safetensors", header, s_eightBytes);
        AssertFormatError(path, null, "not valid UTF-8");
    }

    [TestCase("""{"w":""" + GoodEntry, TestName = "HeaderNotJson(unterminated)")]
    [TestCase("""{"w":""" + GoodEntry + "} x", TestName = "HeaderNotJson(trailing text)")]
    [TestCase("""{'w':1}""", TestName = "HeaderNotJson(single quotes)")]
    [TestCase("        ", TestName = "HeaderNotJson(only spaces)")]
    public void HeaderNotJson(string header)
    {
        string path = Craft("notjson.safetensors", header, s_eightBytes);
        AssertFormatError(path, null, "not valid JSON");
    }

    [TestCase("[1, 2]", "an array")]
    [TestCase("\"text\"", "a string")]
    [TestCase("42", "a number")]
    [TestCase("null", "null")]
    public void HeaderNotAnObject(string header, string found)
    {
        string path = Craft("notobject.safetensors", header);
        AssertFormatError(path, null, "must be a JSON object, found " + found);
    }

    [Test]
    public void DuplicateTensorKey()
    {
        string header = $$$"""{"w":{{{GoodEntry}}},"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}""";
        string path = Craft("dup.safetensors", header, new byte[16]);
        AssertFormatError(path, "w", "more than once");
    }

    [Test]
    public void DuplicateMetadataKey()
    {
        string path = Craft("dupmeta.safetensors", """{"__metadata__":{},"__metadata__":{}}""");
        AssertFormatError(path, "__metadata__", "more than once");
    }

    [Test]
    public void DuplicateKeyInsideMetadata()
    {
        string path = Craft("dupmetakey.safetensors", """{"__metadata__":{"format":"pt","format":"np"}}""");
        AssertFormatError(path, "format", "more than once");
    }

    [TestCase("dtype", """{"dtype":"F32","dtype":"F16","shape":[2],"data_offsets":[0,8]}""")]
    [TestCase("shape", """{"dtype":"F32","shape":[2],"shape":[4],"data_offsets":[0,8]}""")]
    [TestCase("data_offsets", """{"dtype":"F32","shape":[2],"data_offsets":[0,8],"data_offsets":[0,8]}""")]
    public void DuplicateFieldInsideEntry(string field, string entry)
    {
        string path = Craft("dupfield.safetensors", $$$"""{"w":{{{entry}}}}""", s_eightBytes);
        AssertFormatError(path, "w", $"'{field}' more than once");
    }

    [TestCase("[0, 8]")]
    [TestCase("\"F32\"")]
    [TestCase("null")]
    [TestCase("7")]
    public void EntryNotAnObject(string entry)
    {
        string path = Craft("entry.safetensors", $$$"""{"w":{{{entry}}}}""", s_eightBytes);
        AssertFormatError(path, "w", "must be an object");
    }

    [Test]
    public void EntryMissingDtype()
    {
        string path = Craft("nodtype.safetensors", """{"w":{"shape":[2],"data_offsets":[0,8]}}""", s_eightBytes);
        AssertFormatError(path, "w", "no 'dtype'");
    }

    [TestCase("32")]
    [TestCase("null")]
    [TestCase("[\"F32\"]")]
    public void EntryDtypeNotAString(string dtype)
    {
        string path = Craft("dtypetype.safetensors", $$$"""{"w":{"dtype":{{{dtype}}},"shape":[2],"data_offsets":[0,8]}}""", s_eightBytes);
        AssertFormatError(path, "w", "'dtype' must be a string");
    }

    [TestCase("F128")]
    [TestCase("f32")]
    [TestCase("FLOAT")]
    [TestCase("")]
    public void UnknownDtype(string dtype)
    {
        string path = Craft("unknown.safetensors", $$$"""{"w":{"dtype":"{{{dtype}}}","shape":[2],"data_offsets":[0,8]}}""", s_eightBytes);
        AssertFormatError(path, "w", $"unknown dtype '{dtype}'");
    }

    [Test]
    public void EntryMissingShape()
    {
        string path = Craft("noshape.safetensors", """{"w":{"dtype":"F32","data_offsets":[0,8]}}""", s_eightBytes);
        AssertFormatError(path, "w", "no 'shape'");
    }

    [TestCase("2")]
    [TestCase("\"[2]\"")]
    [TestCase("{\"0\":2}")]
    public void EntryShapeNotAnArray(string shape)
    {
        string path = Craft("shapetype.safetensors", $$$"""{"w":{"dtype":"F32","shape":{{{shape}}},"data_offsets":[0,8]}}""", s_eightBytes);
        AssertFormatError(path, "w", "'shape' must be an array");
    }

    [TestCase("[-2]", "-2")]
    [TestCase("[2.0]", "2.0")]
    [TestCase("[2.5]", "2.5")]
    [TestCase("[\"2\"]", "\"2\"")]
    [TestCase("[1, null]", "null")]
    [TestCase("[1e1]", "1e1")]
    [TestCase("[18446744073709551616]", "18446744073709551616")]
    public void EntryShapeElementNotANonNegativeInteger(string shape, string bad)
    {
        string path = Craft("shapeelem.safetensors", $$$"""{"w":{"dtype":"F32","shape":{{{shape}}},"data_offsets":[0,8]}}""", s_eightBytes);
        AssertFormatError(path, "w", "must be a non-negative integer, found " + bad);
    }

    [Test]
    public void EntryMissingDataOffsets()
    {
        string path = Craft("nooffsets.safetensors", """{"w":{"dtype":"F32","shape":[2]}}""", s_eightBytes);
        AssertFormatError(path, "w", "no 'data_offsets'");
    }

    [TestCase("8")]
    [TestCase("[8]")]
    [TestCase("[0, 4, 8]")]
    [TestCase("[]")]
    [TestCase("[-8, 0]")]
    [TestCase("[0, -8]")]
    [TestCase("[0, 8.0]")]
    [TestCase("[\"0\", \"8\"]")]
    [TestCase("{\"begin\":0,\"end\":8}")]
    public void EntryDataOffsetsNotTwoNonNegativeIntegers(string offsets)
    {
        string path = Craft("offsets.safetensors", $$$"""{"w":{"dtype":"F32","shape":[2],"data_offsets":{{{offsets}}}}}""", s_eightBytes);
        AssertFormatError(path, "w", "'data_offsets' must be an array of two non-negative integers");
    }

    [Test]
    public void EntryDataOffsetsBeginAfterEnd()
    {
        string path = Craft("reversed.safetensors", """{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}""", s_eightBytes);
        AssertFormatError(path, "w", "begin 8 is after end 0");
    }

    [TestCase("F32", "[3]", "[0,8]", 12)]
    [TestCase("F16", "[2,2]", "[0,4]", 8)]
    [TestCase("BF16", "[]", "[0,0]", 2)]
    [TestCase("F32", "[0]", "[0,4]", 0)]
    [TestCase("U8", "[5]", "[0,4]", 5)]
    [TestCase("I64", "[1]", "[0,4]", 8)]
    public void ByteLengthDoesNotMatchShapeTimesDtypeSize(string dtype, string shape, string offsets, int needed)
    {
        string path = Craft("size.safetensors", $$$"""{"w":{"dtype":"{{{dtype}}}","shape":{{{shape}}},"data_offsets":{{{offsets}}}}}""", new byte[16]);
        AssertFormatError(path, "w", $"needs {needed}");
    }

    [Test]
    public void ElementCountOverflows()
    {
        // 2^32 * 2^32 wraps to 0 in 64 bits, which would match empty offsets if the product were unchecked.
        string path = Craft("countoverflow.safetensors",
            """{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}""");
        AssertFormatError(path, "w", "element count");
    }

    [Test]
    public void ByteSizeOverflows()
    {
        // 2^62 elements fit in a long; times 4 bytes they do not (and would wrap to 0).
        string path = Craft("byteoverflow.safetensors",
            """{"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}}""");
        AssertFormatError(path, "w", "byte size");
    }

    [Test]
    public void DataOffsetsBeyondEndOfFile()
    {
        string path = Craft("beyond.safetensors",
            """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}""",
            new byte[16]);
        AssertFormatError(path, "w", "end 24 is beyond the data section, which holds 16 bytes");
    }

    [Test]
    public void FileTruncatedMidData()
    {
        string whole = PathOf("whole.safetensors");
        var writer = new SafeTensorsWriter();
        writer.AddSingle("first", new float[10], [10]);
        writer.AddSingle("last", new float[10], [2, 5]);
        writer.Save(whole);
        byte[] bytes = File.ReadAllBytes(whole);

        // Cut inside the last tensor's bytes: the header is intact, only the offsets check can notice.
        string path = WriteRaw("truncated.safetensors", bytes[..^3]);
        AssertFormatError(path, "last", "beyond the data section");
    }

    [Test]
    public void OverlappingTensors()
    {
        string path = Craft("overlap.safetensors",
            """{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}""",
            new byte[16]);
        SafeTensorsFormatException e = AssertFormatError(path, "b", "overlaps");
        Assert.That(e.Message, Does.Contain("'a'"), "both tensors are named");
    }

    [Test]
    public void IdenticalRangesOverlap()
    {
        string path = Craft("alias.safetensors",
            """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}}""",
            s_eightBytes);
        AssertFormatError(path, null, "overlaps");
    }

    [TestCase("\"pt\"", "a string")]
    [TestCase("[\"format\", \"pt\"]", "an array")]
    [TestCase("null", "null")]
    public void MetadataNotAnObject(string metadata, string found)
    {
        string path = Craft("meta.safetensors", $$$"""{"__metadata__":{{{metadata}}}}""");
        AssertFormatError(path, "__metadata__", "must be an object of string values, found " + found);
    }

    [TestCase("1", "a number")]
    [TestCase("null", "null")]
    [TestCase("true", "a boolean")]
    [TestCase("{\"nested\":\"x\"}", "an object")]
    [TestCase("[\"x\"]", "an array")]
    public void MetadataValueNotAString(string value, string found)
    {
        string path = Craft("metavalue.safetensors", $$$"""{"__metadata__":{"format":"pt","step":{{{value}}}}}""");
        AssertFormatError(path, "step", "must be a string, found " + found);
    }

    [Test]
    public void GapBetweenTensors()
    {
        string path = Craft("gap.safetensors",
            """{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}""",
            new byte[12]);
        AssertFormatError(path, "b", "bytes [4, 8) belong to no tensor");
    }

    [Test]
    public void GapBeforeTheFirstTensor()
    {
        string path = Craft("lead.safetensors", """{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", s_eightBytes);
        AssertFormatError(path, "a", "bytes [0, 4) belong to no tensor");
    }

    [Test]
    public void BytesAfterTheLastTensor()
    {
        string path = Craft("extra.safetensors", """{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""", s_eightBytes);
        AssertFormatError(path, "a", "the data section holds 8 bytes, but the tensors end at 4");
    }

    [Test]
    public void DataWithoutAnyTensor()
    {
        string path = Craft("nothing.safetensors", "{}", s_eightBytes);
        AssertFormatError(path, null, "the header lists no tensor, but the data section holds 8 bytes");
    }

    [Test]
    public void AZeroByteTensorInsideAnotherOverlapsIt()
    {
        // The reference implementation walks the tensors in offset order, each starting where the last one ended.
        string path = Craft("inside.safetensors",
            """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}}""",
            s_eightBytes);
        AssertFormatError(path, "e", "overlaps tensor 'a'");
    }

    [Test]
    public void EdgeCasesThatAreValid()
    {
        // "{}" alone; spaces after the JSON; zero-byte tensors where the tensors before them end (at the start, between
        // two tensors, after the last); unknown keys inside an entry.
        string[] valid =
        [
            Craft("empty.safetensors", "{}"),
            Craft("padded.safetensors", "{}      "),
            Craft("zeros.safetensors",
                """{"z":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"f":{"dtype":"F16","shape":[3,0],"data_offsets":[8,8]}}""",
                s_eightBytes),
            Craft("extra.safetensors", """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"note":{"any":[1]}}}""", s_eightBytes),
        ];
        foreach (string path in valid)
        {
            Assert.DoesNotThrow(() => SafeTensorsFile.Open(path).Dispose(), Path.GetFileName(path));
        }
    }

    private static SafeTensorsFormatException AssertFormatError(string path, string? tensor, string detail)
    {
        var e = Assert.Throws<SafeTensorsFormatException>(() => SafeTensorsFile.Open(path).Dispose())!;
        Assert.Multiple(() =>
        {
            Assert.That(e.FilePath, Is.EqualTo(path));
            Assert.That(e.Message, Does.StartWith(path + ": "), "the message names the file");
            if (tensor is not null)
                Assert.That(e.Message, Does.Contain($"'{tensor}'"), "the message names the tensor");
            Assert.That(e.Message, Does.Contain(detail));
        });
        return e;
    }
}
