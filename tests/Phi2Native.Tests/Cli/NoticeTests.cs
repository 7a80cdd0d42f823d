using NUnit.Framework;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Cli;

/// <summary>The device and embedded-model notices on standard error: once per command, one short line each; --quiet hides them.</summary>
[TestFixture]
public class NoticeTests : TemporaryDirectoryTest
{
    private string[] Command(string name) => name switch
    {
        "generate" => ["generate", "--prompt", "In the", "--max-tokens", "2"],
        "trace" => ["trace", "--ids", "1,2,3", "--out", Path.Combine(Temp, "t.safetensors")],
        "tokenize" => ["tokenize", "--text", "In the"],
        "finetune" => ["finetune", "--out", Path.Combine(Temp, "run"), "--max-steps", "1", "--batch-size", "1", "--max-length", "8"],
        _ => throw new ArgumentOutOfRangeException(nameof(name)),
    };

    private static string[] Lines(string error, string prefix) => error.Split('\n').Where(l => l.StartsWith(prefix, StringComparison.Ordinal)).ToArray();

    [TestCase("generate", 1)]
    [TestCase("trace", 1)]
    [TestCase("tokenize", 0)]
    [TestCase("finetune", 1)]
    public void EachNoticeAppearsOnceOnOneShortLineAndQuietHidesThem(string command, int deviceLines)
    {
        var loud = Phi2(Command(command));
        Assert.That(loud.Code, Is.EqualTo(0), loud.Error);
        string[] device = Lines(loud.Error, "device: "), model = Lines(loud.Error, "model: ");
        Assert.That(device, Has.Length.EqualTo(deviceLines), loud.Error);
        Assert.That(model, Has.Length.EqualTo(1), loud.Error);
        Assert.That(model[0], Does.Contain("not Phi-2").And.Contain("--model"));
        Assert.That(device.Concat(model).Select(l => l.TrimEnd().Length), Is.All.LessThanOrEqualTo(100), "short");

        foreach (string quiet in new[] { "--quiet", "-q" })
        {
            if (command == "finetune") Directory.Delete(Path.Combine(Temp, "run"), recursive: true);
            var hushed = Phi2([.. Command(command), quiet]);
            Assert.That(hushed.Code, Is.EqualTo(0), hushed.Error);
            Assert.That(Lines(hushed.Error, "device: ").Concat(Lines(hushed.Error, "model: ")), Is.Empty, $"{quiet}: {hushed.Error}");
            if (command is "tokenize" or "trace") Assert.That(hushed.Output, Is.EqualTo(loud.Output), "the result is the same");
        }
    }

    [Test]
    public void QuietKeepsWarnings()
    {
        // tiny-f32 has no tokenizer files: the GPT-2 fallback is a warning, which --quiet does not hide.
        var (_, _, error) = Phi2("tokenize", "--model", Fixtures.ModelDirectory("f32"), "--text", "Hi", "--quiet");
        Assert.That(error, Does.Contain("warning:").And.Contain("GPT-2"));
    }
}
