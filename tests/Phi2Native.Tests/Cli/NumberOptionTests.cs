using System.CommandLine;
using NUnit.Framework;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Cli;

/// <summary>
/// Numeric options are read before anything runs: a floating value that is NaN or infinite, or a value that is not a
/// number of the option's kind, is exit code 2 with one message naming the option and what it expects.
/// </summary>
[TestFixture]
public class NumberOptionTests : TemporaryDirectoryTest
{
    private static readonly string[] NonFinite = ["NaN", "Infinity", "-Infinity", "1e999"];

    private static IEnumerable<TestCaseData> Cases(string command, string[] required, params string[] options) =>
        from option in options
        from value in NonFinite
        select new TestCaseData(command, required, option, value).SetArgDisplayNames(command, option, value);

    private static IEnumerable<TestCaseData> GenerateCases => Cases("generate", ["--prompt", "In the"], "--temperature", "--top-p");

    private static IEnumerable<TestCaseData> FinetuneCases =>
        Cases("finetune", ["--max-steps", "1"], "--lr", "--weight-decay", "--max-grad-norm", "--resid-dropout", "--alpha", "--dropout");

    private static IEnumerable<TestCaseData> LayersCases => Cases("layers", [], "--alpha", "--dropout");

    [TestCaseSource(nameof(GenerateCases))]
    [TestCaseSource(nameof(FinetuneCases))]
    [TestCaseSource(nameof(LayersCases))]
    public void ANonFiniteValueIsRefusedUpFront(string command, string[] required, string option, string value)
    {
        string run = Path.Combine(Temp, "run");
        string[] output = command == "finetune" ? ["--out", run] : [];
        var (code, stdout, error) = Phi2([command, .. required, .. output, option, value]);
        Assert.That(code, Is.EqualTo(2), error);
        Assert.That(error, Does.Contain($"{option} must be a finite number, got '{value}'"));
        Assert.That(error, Does.Not.Contain("device:"), "refused before a backend opens or a model loads");
        Assert.That(stdout, Is.Empty);
        Assert.That(Directory.Exists(run), Is.False, "nothing was written");
    }

    [Test]
    public void EveryFloatingOptionOfEveryCommandRefusesNaN()
    {
        var root = Phi2Native.Cli.Program.Parse([], TextWriter.Null, TextWriter.Null).RootCommandResult.Command;
        var floating = root.Subcommands.SelectMany(c => c.Options.Where(o => o is Option<double> or Option<double?>).Select(o => (Command: c.Name, Option: o.Name))).ToList();
        Assert.That(floating, Has.Count.GreaterThanOrEqualTo(10), "the families above, found by type");
        foreach (var (command, option) in floating)
        {
            var result = Phi2Native.Cli.Program.Parse([command, option, "NaN"], TextWriter.Null, TextWriter.Null);
            Assert.That(result.Errors.Select(e => e.Message), Has.Some.EqualTo($"{option} must be a finite number, got 'NaN'"), $"{command} {option}");
        }
    }

    [TestCase("generate", "--seed", "-1", "--seed expects a seed: a whole number from 0 to 18446744073709551615, got '-1'")]
    [TestCase("finetune", "--seed", "-1", "--seed expects a seed: a whole number from 0 to 2147483647, got '-1'")]
    [TestCase("generate", "--max-tokens", "ten", "--max-tokens expects a whole number from -2147483648 to 2147483647, got 'ten'")]
    [TestCase("generate", "--top-k", "1.5", "--top-k expects a whole number")]
    [TestCase("generate", "--temperature", "warm", "--temperature expects a number (e.g. 0.5 or 2e-4), got 'warm'")]
    [TestCase("finetune", "--lr", "1,5", "--lr expects a number")]
    public void AValueThatIsNotANumberOfTheOptionsKindSaysWhatItExpects(string command, string option, string value, string message)
    {
        string[] required = command == "generate" ? ["--prompt", "x"] : ["--out", Path.Combine(Temp, "run")];
        var (code, _, error) = Phi2([command, .. required, option, value]);
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error, Does.Contain(message));
        Assert.That(error, Does.Not.Contain("System."), "no .NET type names");
    }

    [TestCase("--dropout", "1", "--dropout must be in [0, 1)")]
    [TestCase("--dropout", "-0.1", "--dropout must be in [0, 1)")]
    [TestCase("--r", "0", "--r must be a positive whole number")]
    public void LoraValuesOutOfRangeAreNamedBeforeAnythingLoads(string option, string value, string message)
    {
        var (code, _, error) = Phi2("finetune", "--out", Path.Combine(Temp, "run"), "--max-steps", "1", option, value);
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error, Does.Contain(message));
        Assert.That(error, Does.Not.Contain("device:"));
    }
}
