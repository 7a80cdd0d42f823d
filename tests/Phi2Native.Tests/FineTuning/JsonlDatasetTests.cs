using System.Text;
using NUnit.Framework;
using Phi2Native.FineTuning;
using Phi2Native.FineTuning.Data;

namespace Phi2Native.Tests.FineTuning;

/// <summary>
/// JSONL reading: both example forms with their label masks worked out by hand for the trivial encoder
/// (char -> code point mod 100), blank lines, and every kind of malformed line, stopping and skipping.
/// </summary>
[TestFixture]
public sealed class JsonlDatasetTests : DataTestBase
{
    private const int Eot = 7;

    [Test]
    public void TextFormScoresEveryTokenAndAppendsEndOfText()
    {
        string path = WriteLines("text.jsonl", """{"text": "ab"}""", """{"text": "cd", "id": 3}""");
        var data = Load(path, endOfText: Eot);

        Assert.That(data.Format, Is.EqualTo(JsonlFormat.Text));
        Assert.That(data.Examples, Has.Count.EqualTo(2));
        // "ab" -> 97 98, then end-of-text; the label of every token is the token.
        Assert.That(data.Examples[0].InputIds, Is.EqualTo(new[] { 97, 98, Eot }));
        Assert.That(data.Examples[0].Labels, Is.EqualTo(new[] { 97, 98, Eot }));
        // "cd" -> 99 0 ('d' is 100); the extra "id" field is ignored.
        Assert.That(data.Examples[1].InputIds, Is.EqualTo(new[] { 99, 0, Eot }));
        Assert.That(data.Examples[1].LineNumber, Is.EqualTo(2));
        Assert.That(data.TokenCount, Is.EqualTo(6));
    }

    [Test]
    public void PromptCompletionMasksThePromptOnly()
    {
        string path = WriteLines("qa.jsonl", """{"prompt": "Q:", "completion": " A"}""");
        var example = Load(path, endOfText: Eot).Examples[0];

        // "Q:" -> 81 58 (masked), " A" -> 32 65 (scored), end-of-text scored: the model learns to stop.
        Assert.That(example.InputIds, Is.EqualTo(new[] { 81, 58, 32, 65, Eot }));
        Assert.That(example.Labels, Is.EqualTo(new[] { X, X, 32, 65, Eot }));
    }

    [Test]
    public void EmptyPromptIsAllowedAndNoEndOfTextByDefault()
    {
        string path = WriteLines("qa.jsonl", """{"completion": "b", "prompt": ""}""");
        var data = Load(path);

        Assert.That(data.Format, Is.EqualTo(JsonlFormat.PromptCompletion));
        Assert.That(data.Examples[0].InputIds, Is.EqualTo(new[] { 98 }));
        Assert.That(data.Examples[0].Labels, Is.EqualTo(new[] { 98 }));
    }

    [Test]
    public void BlankLinesAreSkippedButCountedInLineNumbers()
    {
        // A byte-order mark, CRLF endings, a whitespace-only line and no newline after the last line.
        byte[] bytes = [0xEF, 0xBB, 0xBF, .. Encoding.UTF8.GetBytes("{\"text\": \"a\"}\r\n\r\n \t \n{\"text\": \"b\"}")];
        var data = Load(WriteBytes("blank.jsonl", bytes));

        Assert.That(data.Examples.Select(e => e.LineNumber), Is.EqualTo(new[] { 1, 4 }));
        Assert.That(data.Examples.Select(e => e.InputIds.Single()), Is.EqualTo(new[] { 97, 98 }));
        Assert.That(data.SkippedLines, Is.Zero);
    }

    [Test]
    public void LineLongerThanTheReadBufferIsWhole()
    {
        string text = new('a', 200_000);
        var data = Load(WriteLines("long.jsonl", "{\"text\": \"" + text + "\"}", """{"text": "b"}"""));

        Assert.That(data.Examples[0].Length, Is.EqualTo(200_000));
        Assert.That(data.Examples[1].InputIds, Is.EqualTo(new[] { 98 }));
    }

    [TestCase("not json", "not valid JSON at column 2")]
    [TestCase("""{"text": "a"} x""", "not valid JSON at column 15")]
    [TestCase("""{"text": "a",}""", "not valid JSON")]
    [TestCase("[1, 2]", "a JSON array, not an object")]
    [TestCase("\"just a string\"", "a JSON string, not an object")]
    [TestCase("{}", "no \"text\" field and no \"prompt\" and \"completion\" fields")]
    [TestCase("""{"txt": "a"}""", "no \"text\" field")]
    [TestCase("""{"text": 5}""", "\"text\" is a number, expected a string")]
    [TestCase("""{"text": null}""", "\"text\" is null, expected a string")]
    [TestCase("""{"text": ["a"]}""", "\"text\" is an array, expected a string")]
    [TestCase("""{"text": "a", "text": "b"}""", "\"text\" appears twice")]
    [TestCase("""{"text": ""}""", "\"text\" encodes to no tokens")]
    [TestCase("""{"text": "a", "prompt": "b"}""", "has both \"text\" and \"prompt\"")]
    [TestCase("""{"text": "a", "completion": "b"}""", "has both \"text\" and \"completion\"")]
    [TestCase("""{"prompt": "a", "completion": "b"}""", "a prompt/completion example, but line 1 made this a text file")]
    public void MalformedLineStopsTheLoadWithItsLineNumber(string badLine, string expected)
    {
        // Lines: 1 good, 2 blank, 3 good, 4 bad, 5 good (never read).
        string path = WriteLines("bad.jsonl", """{"text": "a"}""", "", """{"text": "b"}""", badLine, """{"text": "c"}""");

        var error = Assert.Throws<DataFormatException>(() => Load(path))!;
        Assert.That(error.FilePath, Is.EqualTo(path));
        Assert.That(error.LineNumber, Is.EqualTo(4));
        Assert.That(error.Message, Does.StartWith(path + ":4: "));
        Assert.That(error.Message, Does.Contain(expected));
        Assert.That(error, Is.InstanceOf<Phi2Exception>());
    }

    [TestCase("""{"prompt": "a"}""", "\"prompt\" without \"completion\"")]
    [TestCase("""{"completion": "a"}""", "\"completion\" without \"prompt\"")]
    [TestCase("""{"prompt": 1, "completion": "a"}""", "\"prompt\" is a number, expected a string")]
    [TestCase("""{"prompt": "a", "completion": false}""", "\"completion\" is a boolean, expected a string")]
    [TestCase("""{"prompt": "a", "completion": ""}""", "\"completion\" encodes to no tokens")]
    [TestCase("""{"text": "a"}""", "a text example, but line 1 made this a prompt/completion file")]
    public void MalformedPromptCompletionLine(string badLine, string expected)
    {
        string path = WriteLines("bad.jsonl", """{"prompt": "a", "completion": "b"}""", badLine);

        var error = Assert.Throws<DataFormatException>(() => Load(path))!;
        Assert.That(error.LineNumber, Is.EqualTo(2));
        Assert.That(error.Message, Does.Contain(expected));
    }

    [Test]
    public void FormIsFixedByTheFirstWellFormedLine()
    {
        // Line 1 is malformed and skipped, so line 2 (prompt/completion) fixes the form and line 3 (text) is the odd one.
        var warnings = new List<string>();
        string path = WriteLines("mixed.jsonl", "{", """{"prompt": "a", "completion": "b"}""", """{"text": "c"}""");
        var data = Load(path, skip: true, warnings: warnings);

        Assert.That(data.Format, Is.EqualTo(JsonlFormat.PromptCompletion));
        Assert.That(data.SkippedLineNumbers, Is.EqualTo(new[] { 1, 3 }));
        Assert.That(warnings[1], Does.Contain("line 2 made this a prompt/completion file"));
    }

    [Test]
    public void InvalidUtf8IsReportedWithItsLine()
    {
        byte[] bytes = [.. Encoding.UTF8.GetBytes("{\"text\": \"a\"}\n{\"text\": \"b"), 0xFF, .. Encoding.UTF8.GetBytes("\"}\n")];
        var error = Assert.Throws<DataFormatException>(() => Load(WriteBytes("utf8.jsonl", bytes)))!;

        Assert.That(error.LineNumber, Is.EqualTo(2));
        Assert.That(error.Message, Is.EqualTo(error.FilePath + ":2: not valid UTF-8"));
    }

    [Test]
    public void SkipModeSkipsBadLinesAndReportsEach()
    {
        var warnings = new List<string>();
        string path = WriteLines("skip.jsonl",
            """{"text": "a"}""", """{"text": 1}""", """{"text": "b"}""", "", "oops", """{"text": "c"}""");
        var data = Load(path, endOfText: Eot, skip: true, warnings: warnings);

        Assert.That(data.Examples.Select(e => e.LineNumber), Is.EqualTo(new[] { 1, 3, 6 }));
        Assert.That(data.SkippedLines, Is.EqualTo(2));
        Assert.That(data.SkippedLineNumbers, Is.EqualTo(new[] { 2, 5 }));
        Assert.That(warnings, Has.Count.EqualTo(3));
        Assert.That(warnings[0], Does.StartWith(path + ":2: \"text\" is a number").And.EndWith("(line skipped)"));
        Assert.That(warnings[1], Does.StartWith(path + ":5: not valid JSON"));
        Assert.That(warnings[2], Is.EqualTo(path + ": skipped 2 malformed lines"));
    }

    [Test]
    public void EmptyFileIsAnErrorNamingTheFile()
    {
        string path = WriteBytes("empty.jsonl", []);
        var error = Assert.Throws<DataFormatException>(() => Load(path))!;

        Assert.That(error.LineNumber, Is.Null);
        Assert.That(error.Message, Does.StartWith(path + ": no usable examples (0 lines"));
    }

    [Test]
    public void BlankOnlyFileIsEmpty()
    {
        string path = WriteBytes("blank.jsonl", Encoding.UTF8.GetBytes("\n \n\t\r\n"));
        var error = Assert.Throws<DataFormatException>(() => Load(path))!;
        Assert.That(error.Message, Does.Contain("no usable examples (3 lines: 3 blank, 0 malformed and skipped)"));
    }

    [Test]
    public void AllLinesSkippedIsEmpty()
    {
        var warnings = new List<string>();
        string path = WriteLines("bad.jsonl", "1", "2");
        var error = Assert.Throws<DataFormatException>(() => Load(path, skip: true, warnings: warnings))!;

        Assert.That(error.Message, Does.StartWith(path + ": no usable examples (2 lines: 0 blank, 2 malformed and skipped)"));
        Assert.That(warnings, Has.Count.EqualTo(3));
    }

    [Test]
    public void MissingFileIsADataError()
    {
        string path = Path.Combine(Folder, "absent.jsonl");
        var error = Assert.Throws<DataFormatException>(() => Load(path))!;
        Assert.That(error.Message, Is.EqualTo(path + ": the JSONL file does not exist"));
    }
}
