using System.Text.RegularExpressions;
using NUnit.Framework;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Cli;

/// <summary>The README's main job: the embedded model trains on its text, then continues a prompt from it.</summary>
[TestFixture]
public class DemoCommandTests : TemporaryDirectoryTest
{
    [Test]
    public void AShortRunTrainsThenGeneratesAndSaysWhatTheModelIs()
    {
        var (code, output, error) = Phi2("demo", "--steps", "12", "--max-tokens", "8");
        Assert.That(code, Is.EqualTo(0), error);
        Assert.That(output, Does.Contain("not Phi-2").And.Contain("--model"));
        Assert.That(output, Does.Contain("validation loss").And.Contain("generating"));
        Assert.That(output, Does.Contain("And the LORD said unto Moses,"), "the prompt comes from the shipped text");
        Assert.That(error, Does.Contain("device: cpu"));
    }

    [Test]
    public void TheDefaultRunHalvesTheValidationLoss()
    {
        // The whole default run (600 steps, about 45 s on 2 cores): the claim of the README, checked as a ratio, not a time.
        var (code, output, error) = Phi2("demo", "--max-tokens", "16");
        Assert.That(code, Is.EqualTo(0), error);
        var match = Regex.Match(output, @"validation loss (\d+\.\d+) -> (\d+\.\d+)");
        Assert.That(match.Success, Is.True, output);
        double start = double.Parse(match.Groups[1].Value), end = double.Parse(match.Groups[2].Value);
        Assert.That(end, Is.LessThan(start / 2));
        string prompt = "And the LORD said unto Moses,";
        // The output ends with the generated text.
        string continuation = output[(output.LastIndexOf(prompt, StringComparison.Ordinal) + prompt.Length)..];
        Assert.That(continuation, Does.Contain("LORD").Or.Contain(" unto ").Or.Contain("Moses"), "the continuation is recognizably the text's");
    }

    [TestCase("--steps", "0")]
    [TestCase("--max-tokens", "-1")]
    public void BadSettingsAreExitCode2(string option, string value) =>
        Assert.That(Phi2("demo", option, value).Code, Is.EqualTo(2));
}
