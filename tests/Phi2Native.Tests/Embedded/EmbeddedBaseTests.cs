using System.Diagnostics;
using System.Runtime.Intrinsics.X86;
using NUnit.Framework;
using Phi2Native.Backends.Cpu;
using Phi2Native.Embedded;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Embedded;

/// <summary>
/// The pretrained base the embedded default ships: the shipped bytes are the recorded ones, the default model is that
/// base, it has learnt Genesis and not Exodus, and `phi2 demo --make-base` reproduces it byte for byte.
/// </summary>
[TestFixture]
public class EmbeddedBaseTests : TemporaryDirectoryTest
{
    [Test]
    public void TheShippedWeightsHaveTheRecordedHash()
    {
        Assert.That(EmbeddedBase.ResourceSha256(), Is.EqualTo(EmbeddedBase.ShippedSha256));
        string file = Path.Combine(Fixtures.RepositoryRoot, "src", "Phi2Native", "Embedded", "base.safetensors");
        Assert.That(EmbeddedBase.Sha256(file), Is.EqualTo(EmbeddedBase.ShippedSha256), "the file in the repository is the one embedded");
        Assert.That(new FileInfo(file).Length, Is.InRange(1_000_000, 8_000_000), "a few MB");
    }

    [Test]
    public void TheDefaultModelHasLearntGenesisAndNotExodus()
    {
        var tokenizer = EmbeddedDefault.Tokenizer();
        using var model = EmbeddedDefault.CreateModel(CpuBackend.Default);
        double genesis = EmbeddedEvaluation.MeanLoss(model, EmbeddedBook.Genesis.PackedRows(tokenizer, 128).Validation, 8);
        double exodus = EmbeddedEvaluation.MeanLoss(model, EmbeddedBook.Exodus.PackedRows(tokenizer, 128).Validation, 8);
        double uniform = Math.Log(EmbeddedDefault.Config.VocabSize);
        Assert.That(genesis, Is.InRange(0.0, uniform / 2), "held-out Genesis: far below the untrained model's ln V");
        Assert.That(exodus, Is.InRange(genesis * 1.1, uniform), "Exodus was never trained on");
    }

    [Test]
    public void TheBooksSplitAsTheWholeTextDoes()
    {
        var genesis = EmbeddedBook.Genesis;
        var exodus = EmbeddedBook.Exodus;
        Assert.That(genesis.ValidationParagraphs.Select(Heading), Is.EqualTo(new[] { "Genesis 20", "Genesis 40" }));
        Assert.That(exodus.ValidationParagraphs.Select(Heading), Is.EqualTo(new[] { "Exodus 10", "Exodus 30" }));
        Assert.That(genesis.TrainingParagraphs, Has.Count.EqualTo(48).And.All.StartsWith("Genesis "));
        Assert.That(exodus.TrainingParagraphs, Has.Count.EqualTo(38).And.All.StartsWith("Exodus "));
        Assert.That(genesis.TrainingParagraphs.Concat(exodus.TrainingParagraphs), Is.EqualTo(EmbeddedDefault.TrainingParagraphs));
        Assert.That(genesis.ValidationParagraphs.Concat(exodus.ValidationParagraphs), Is.EqualTo(EmbeddedDefault.ValidationParagraphs));
    }

    private static string Heading(string paragraph) => paragraph.Split('\n')[0];

    [Test]
    public void MakeBaseReproducesTheShippedBytes()
    {
        // The shipped base was computed with 256-bit vectors (AVX2); a machine with AVX-512 is told to use 256-bit ones
        // too, and a thread count other than the 2 it was made with shows that threads do not change the result.
        if (!Avx2.IsSupported) Assert.Ignore("the shipped base was made with AVX2's 256-bit vectors; this machine has none, and other widths round differently");
        string path = Path.Combine(Temp, "base.safetensors");
        var (code, output, error) = RunPhi2InChild(new Dictionary<string, string>
        {
            ["DOTNET_PreferredVectorBitWidth"] = "256", ["DOTNET_PROCESSOR_COUNT"] = "3",
        }, "demo", "--make-base", path);
        Assert.That(code, Is.EqualTo(0), error);
        Assert.That(EmbeddedBase.Sha256(path), Is.EqualTo(EmbeddedBase.ShippedSha256), output);
        Assert.That(output, Does.Contain("the same bytes as the shipped base"));
    }

    /// <summary>Runs `phi2` in a child process (the environment decides its vector width and thread count at start).</summary>
    private static (int Code, string Output, string Error) RunPhi2InChild(IReadOnlyDictionary<string, string> environment, params string[] args)
    {
        string dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host ? host : "dotnet";
        var start = new ProcessStartInfo(dotnet) { RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "phi2.dll"));
        foreach (string arg in args) start.ArgumentList.Add(arg);
        foreach (var (name, value) in environment) start.Environment[name] = value;
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        process.WaitForExit();
        return (process.ExitCode, output.Result, error.Result);
    }
}
