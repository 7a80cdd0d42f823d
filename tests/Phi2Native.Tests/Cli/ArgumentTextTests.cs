using NUnit.Framework;
using Phi2Native.Embedded;
using Phi2Native.FineTuning;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Cli;

/// <summary>
/// Arguments are taken literally (an @ starts text, not a response file), empty values where they make sense, and the
/// messages for paths and ranges given the wrong way round: each names what was given and what was expected.
/// </summary>
[TestFixture]
public class ArgumentTextTests : TemporaryDirectoryTest
{
    private static int[] Ids(string output) => output.TrimEnd().Split('\n')[^1].Split(',', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToArray();

    [TestCase("@user hello")]
    [TestCase("@Override")]
    public void ATextStartingWithAtIsText(string text)
    {
        var (code, output, error) = Phi2("tokenize", "--text", text);
        Assert.That(code, Is.EqualTo(0), error);
        Assert.That(Ids(output), Is.EqualTo(EmbeddedDefault.Tokenizer().Encode(text)));
        var generated = Phi2("generate", "--prompt", text, "--max-tokens", "2", "--print-ids");
        Assert.That(generated.Code, Is.EqualTo(0), generated.Error);
        Assert.That(Ids(generated.Output), Has.Length.EqualTo(2));
    }

    [TestCase("--text", "")]
    [TestCase("--text=")]
    public void TokenizeAcceptsAnEmptyText(params string[] option)
    {
        var (code, output, error) = Phi2(["tokenize", .. option]);
        Assert.That(code, Is.EqualTo(0), error);
        Assert.That(output, Is.EqualTo(Environment.NewLine), "no token lines, then the empty id list");
    }

    [TestCase("--prompt", "")]
    [TestCase("--prompt=")]
    public void AnEmptyPromptGeneratesFromTheBosToken(params string[] option)
    {
        var fromEmpty = Phi2(["generate", .. option, "--max-tokens", "4", "--print-ids"]);
        Assert.That(fromEmpty.Code, Is.EqualTo(0), fromEmpty.Error);
        Assert.That(fromEmpty.Error, Does.Contain($"starting from bos_token_id {EmbeddedDefault.Config.BosTokenId}"));
        var fromBos = Phi2("generate", "--ids", EmbeddedDefault.Config.BosTokenId.ToString()!, "--max-tokens", "4", "--print-ids");
        Assert.That(fromEmpty.Output, Is.EqualTo(fromBos.Output));
    }

    [Test]
    public void AnEmptyPromptWithoutABosTokenSaysSo()
    {
        var (code, _, error) = Phi2("generate", "--model", Fixtures.ModelDirectory("msft"), "--prompt", "", "--max-tokens", "2");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error, Does.Contain("prompt is empty and this model's config.json has no bos_token_id"));
    }

    [TestCase("generate", "--prompt", "x", "--stop", "", "an empty stop string would stop before the first token")]
    [TestCase("demo", "--prompt", "", "--steps", "1", "--prompt is empty: the demo continues a text")]
    [TestCase("trace", "--text", "", "--out", "t.safetensors", "is 0 token(s); the causal-LM loss needs at least 2")]
    public void AnEmptyValueThatCannotWorkIsRefusedUpFront(string command, string option, string value, string other, string otherValue, string message)
    {
        var (code, _, error) = Phi2(command, option, value, other, other == "--out" ? Path.Combine(Temp, otherValue) : otherValue);
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error, Does.Contain(message));
        if (command != "trace") Assert.That(error, Does.Not.Contain("device:"), "before anything runs");
    }

    [TestCase("layers")]
    [TestCase("finetune")]
    public void AReversedLayerRangeSaysReversed(string command)
    {
        string[] rest = command == "finetune" ? ["--out", Path.Combine(Temp, "run"), "--max-steps", "1"] : [];
        var (code, _, error) = Phi2([command, "--layers", "3-1", .. rest]);
        Assert.That(code, Is.EqualTo(2), error);
        Assert.That(error, Does.Contain("layers: \"3-1\" is reversed; write the lower layer first (1-3)"));
    }

    private static IEnumerable<TestCaseData> FolderOptions()
    {
        yield return new TestCaseData(new[] { "generate", "--prompt", "x" }, "--model", "model folder '{0}' is a file, not a folder");
        yield return new TestCaseData(new[] { "trace", "--ids", "1,2", "--out", "t.safetensors" }, "--model", "model folder '{0}' is a file, not a folder");
        yield return new TestCaseData(new[] { "layers" }, "--model", "model folder '{0}' is a file, not a folder");
        yield return new TestCaseData(new[] { "tokenize", "--text", "x" }, "--model", "model folder '{0}' is a file, not a folder");
        yield return new TestCaseData(new[] { "generate", "--prompt", "x" }, "--adapter", "adapter folder '{0}' is a file, not a folder");
        yield return new TestCaseData(new[] { "merge", "--out", "merged" }, "--adapter", "adapter folder '{0}' is a file, not a folder");
        yield return new TestCaseData(new[] { "finetune", "--out", "run", "--max-steps", "1" }, "--resume", "--resume '{0}' is a file, not a folder");
        yield return new TestCaseData(new[] { "finetune", "--max-steps", "1" }, "--out", "--out '{0}' is a file; expected a folder");
    }

    [TestCaseSource(nameof(FolderOptions))]
    public void AFileWhereAFolderIsExpectedSaysSo(string[] command, string option, string message)
    {
        string file = Path.Combine(Temp, "a-file");
        File.WriteAllText(file, "x");
        string[] args = [.. command.Select(a => a is "t.safetensors" or "merged" or "run" ? Path.Combine(Temp, a) : a), option, file];
        var (code, _, error) = Phi2(args);
        Assert.That(code, Is.EqualTo(2), error);
        Assert.That(error, Does.Contain(string.Format(message, file)));
    }

    [Test]
    public void AFolderWhereAJsonlFileIsExpectedSaysSo()
    {
        var (code, _, error) = Phi2("finetune", "--data", Temp, "--out", Path.Combine(Temp, "run"), "--max-steps", "1");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error, Does.Contain($"{Temp}: the JSONL file is a folder, not a file"));
    }

    [Test]
    public void AMissingOutputFolderIsNamedBeforeAnythingRuns()
    {
        string missing = Path.Combine(Temp, "no", "such"), outPath = Path.Combine(missing, "t.safetensors");
        var (code, _, error) = Phi2("trace", "--ids", "1,2,3", "--out", outPath);
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error, Does.Contain($"the folder '{missing}' does not exist"));
        Assert.That(error, Does.Not.Contain(".tmp").And.Not.Contain("device:"));
        var folder = Phi2("trace", "--ids", "1,2,3", "--out", Temp);
        Assert.That(folder.Error, Does.Contain($"--out '{Temp}' is a folder; expected a .safetensors file"));
    }

    [Test]
    public void TheWriterNamesAMissingFolderNotItsTemporaryFile()
    {
        string missing = Path.Combine(Temp, "gone");
        var e = Assert.Throws<DirectoryNotFoundException>(() => new Phi2Native.IO.SafeTensorsWriter().Save(Path.Combine(missing, "x.safetensors")))!;
        Assert.That(e.Message, Does.Contain($"its folder '{missing}' does not exist").And.Not.Contain(".tmp"));
    }
}
