using System.Text;
using NUnit.Framework;
using Phi2Native.FineTuning;
using Phi2Native.FineTuning.Data;

namespace Phi2Native.Tests.FineTuning;

/// <summary>A temporary folder per test and the trivial encoder the data tests work out by hand.</summary>
public abstract class DataTestBase
{
    /// <summary>-100, the label the loss ignores.</summary>
    protected const int X = TokenizedExample.IgnoreLabel;

    /// <summary>The test's own folder, deleted after the test.</summary>
    protected string Folder { get; private set; } = "";

    [SetUp]
    public void CreateFolder()
    {
        Folder = Path.Combine(Path.GetTempPath(), "phi2native-data-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Folder);
    }

    [TearDown]
    public void DeleteFolder()
    {
        if (Directory.Exists(Folder)) Directory.Delete(Folder, recursive: true);
    }

    /// <summary>Each char to its code point mod 100: 'a' = 97, 'b' = 98, 'c' = 99, 'd' = 0, ' ' = 32, 'Q' = 81, 'A' = 65.</summary>
    protected static int[] Encode(string text) => text.Select(c => c % 100).ToArray();

    /// <summary>Writes <paramref name="lines"/> joined by '\n' (no final newline unless the last line is empty) as UTF-8.</summary>
    protected string WriteLines(string fileName, params string[] lines) =>
        WriteBytes(fileName, Encoding.UTF8.GetBytes(string.Join("\n", lines)));

    /// <summary>Writes <paramref name="bytes"/> exactly.</summary>
    protected string WriteBytes(string fileName, byte[] bytes)
    {
        string path = Path.Combine(Folder, fileName);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    /// <summary>Loads <paramref name="path"/> with the trivial encoder.</summary>
    protected static JsonlDataset Load(string path, int? endOfText = null, bool skip = false, List<string>? warnings = null) =>
        JsonlDataset.Load(path, Encode, new JsonlOptions { EndOfTextId = endOfText, SkipMalformedLines = skip, Warn = warnings is null ? null : warnings.Add });

    /// <summary>An example whose labels equal its ids except the first <paramref name="masked"/>, which are -100.</summary>
    protected static TokenizedExample Example(int masked, params int[] ids)
    {
        var labels = (int[])ids.Clone();
        labels.AsSpan(0, masked).Fill(X);
        return new TokenizedExample(ids, labels);
    }
}
