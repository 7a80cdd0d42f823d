using System.Text.RegularExpressions;
using NUnit.Framework;
using Phi2Native.Embedded;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Cli;

/// <summary>
/// The README's main job: LoRA on chosen layers of the pretrained base, shown as tables (the figures themselves are
/// checked on the run's results in EmbeddedLoraDemoTests); --from-scratch, the old path; --make-base's refusals.
/// </summary>
[TestFixture]
public class DemoCommandTests : TemporaryDirectoryTest
{
    [Test]
    public void AShortRunShowsWhatTrainsTheLossesAndBothContinuations()
    {
        var (code, output, error) = Phi2("demo", "--steps", "4", "--max-tokens", "6", "--layers", "3", "--preset", "fluency");
        Assert.That(code, Is.EqualTo(0), error);
        Assert.That(output, Does.Contain("LoRA on layers 3 of a pretrained base, the rest frozen"));
        Assert.That(output, Does.Contain("not Phi-2").And.Contain("--model"));
        Assert.That(output, Does.Contain("preset fluency").And.Contain("Exodus"));
        Assert.That(output, Does.Contain("trainable: LoRA A and B").And.Contain("frozen: every base parameter").And.Contain("skipped below layer 3"));
        Assert.That(output, Does.Contain("held-out loss").And.Contain("base + adapter"));
        // Both continuations start with the prompt, in one table row.
        Assert.That(Regex.Matches(output, Regex.Escape("And the LORD said unto Moses,")), Has.Count.GreaterThanOrEqualTo(2));
        Assert.That(error, Does.Contain("device: cpu").And.Contain("step 0: Exodus held-out loss"));
    }

    [Test]
    public void FromScratchStillTrainsTheUntrainedModelThenGenerates()
    {
        var (code, output, error) = Phi2("demo", "--from-scratch", "--steps", "12", "--max-tokens", "8");
        Assert.That(code, Is.EqualTo(0), error);
        Assert.That(output, Does.Contain("training from scratch").And.Contain("generating"));
        Assert.That(output, Does.Contain("And the LORD said unto Moses,"), "the prompt comes from the shipped text");
        var match = Regex.Match(output, @"validation loss (\d+\.\d+) -> (\d+\.\d+)");
        Assert.That(match.Success, Is.True, output);
        double start = double.Parse(match.Groups[1].Value), end = double.Parse(match.Groups[2].Value);
        Assert.That(start, Is.EqualTo(Math.Log(EmbeddedDefault.Config.VocabSize)).Within(0.1), "random weights: the run starts near ln V, not from the base");
        Assert.That(end, Is.LessThan(start - 0.5), "12 steps already learn something");
    }

    [TestCase("--steps", "0")]
    [TestCase("--max-tokens", "-1")]
    [TestCase("--layers", "4")]
    [TestCase("--layers", "3-2")]
    [TestCase("--preset", "domain")]
    [TestCase("--preset", "poetry")]
    [TestCase("--prompt", "")]
    public void BadSettingsAreExitCode2(string option, string value) =>
        Assert.That(Phi2("demo", option, value).Code, Is.EqualTo(2));

    // BASE stands for a file in the test's folder.
    [TestCase("--preset", "--from-scratch", "--preset", "fluency")]
    [TestCase("--seed", "--from-scratch", "--seed", "3")]
    [TestCase("--steps", "--make-base", "BASE", "--steps", "5")]
    [TestCase("--device", "--make-base", "BASE", "--device", "emulated")]
    [TestCase("--from-scratch", "--make-base", "BASE", "--from-scratch")]
    public void OptionsAModeWouldIgnoreAreRefused(string named, params string[] args)
    {
        string path = Path.Combine(Temp, "base.safetensors");
        var (code, _, error) = Phi2(["demo", .. args.Select(a => a == "BASE" ? path : a)]);
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error, Does.Contain(named).And.Contain("does not apply"));
        Assert.That(File.Exists(path), Is.False, "refused before anything ran");
    }

    [Test]
    public void MakeBaseNamesAFolderOrAMissingFolder()
    {
        var folder = Phi2("demo", "--make-base", Temp);
        Assert.That(folder.Code, Is.EqualTo(2));
        Assert.That(folder.Error, Does.Contain("is a folder"));
        var missing = Phi2("demo", "--make-base", Path.Combine(Temp, "no", "base.safetensors"));
        Assert.That(missing.Code, Is.EqualTo(2));
        Assert.That(missing.Error, Does.Contain("does not exist"));
    }
}
