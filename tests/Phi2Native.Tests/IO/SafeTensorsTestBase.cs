using System.Buffers.Binary;
using System.Text;
using NUnit.Framework;

namespace Phi2Native.Tests.IO;

/// <summary>A temporary folder per test, and helpers that write safetensors bytes by hand.</summary>
/// <remarks>
/// Corrupt files are built byte by byte rather than by breaking the writer's output, so each test states
/// exactly what is on disk and does not depend on the writer it may be testing.
/// </remarks>
public abstract class SafeTensorsTestBase
{
    /// <summary>The test's own folder, deleted after the test.</summary>
    protected string Folder { get; private set; } = "";

    [SetUp]
    public void CreateFolder()
    {
        Folder = Path.Combine(Path.GetTempPath(), "phi2native-io-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Folder);
    }

    [TearDown]
    public void DeleteFolder()
    {
        if (Directory.Exists(Folder)) Directory.Delete(Folder, recursive: true);
    }

    /// <summary>A path inside <see cref="Folder"/>.</summary>
    protected string PathOf(string fileName) => Path.Combine(Folder, fileName);

    /// <summary>Writes the 8-byte length of <paramref name="header"/>, the header, then <paramref name="data"/>.</summary>
    protected string Craft(string fileName, byte[] header, byte[]? data = null)
    {
        var bytes = new byte[8 + header.Length + (data?.Length ?? 0)];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)header.Length);
        header.CopyTo(bytes, 8);
        data?.CopyTo(bytes, 8 + header.Length);
        return WriteRaw(fileName, bytes);
    }

    /// <summary>As <see cref="Craft(string, byte[], byte[])"/> with a UTF-8 JSON header.</summary>
    protected string Craft(string fileName, string headerJson, byte[]? data = null) =>
        Craft(fileName, Encoding.UTF8.GetBytes(headerJson), data);

    /// <summary>Writes <paramref name="bytes"/> exactly.</summary>
    protected string WriteRaw(string fileName, byte[] bytes)
    {
        string path = PathOf(fileName);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    /// <summary>Files left in <see cref="Folder"/>, by name.</summary>
    protected string[] FilesInFolder() =>
        Directory.GetFiles(Folder).Select(f => Path.GetFileName(f)!).OrderBy(f => f, StringComparer.Ordinal).ToArray();
}
