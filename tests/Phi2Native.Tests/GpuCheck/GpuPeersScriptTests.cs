using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using NUnit.Framework;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.GpuCheck;

/// <summary>
/// bench/peers/gpu_peers.py where there is no GPU: --dry-run runs its torch-only parts on the CPU with Debian's torch and
/// prints the ratio row against a results file written here; without a GPU (and without --dry-run) or without torch it
/// fails with one line saying which. Needs /usr/bin/python3 with torch (python3-torch; .ci/run installs it and sets
/// PHI2NATIVE_REQUIRE_TORCH=1, which turns its absence into a failure); elsewhere the tests are ignored, saying why.
/// </summary>
[TestFixture]
public partial class GpuPeersScriptTests : TemporaryDirectoryTest
{
    private const string Python = "/usr/bin/python3";
    private static readonly string Script = Path.Combine(Fixtures.RepositoryRoot, "bench", "peers", "gpu_peers.py");

    private static (int Code, string Output, string Error) RunPython(params string[] args)
    {
        var start = new ProcessStartInfo(Python) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = Fixtures.RepositoryRoot };
        foreach (string arg in args) start.ArgumentList.Add(arg);
        using var process = Process.Start(start)!;
        var error = process.StandardError.ReadToEndAsync();
        string output = process.StandardOutput.ReadToEnd();
        if (!process.WaitForExit(TimeSpan.FromMinutes(2))) process.Kill(entireProcessTree: true);
        return (process.ExitCode, output, error.Result);
    }

    private static void RequireTorch()
    {
        bool present = File.Exists(Python) && RunPython("-c", "import torch").Code == 0;
        if (present) return;
        const string why = "/usr/bin/python3 cannot import torch (apt-get install -y python3-torch)";
        if (Environment.GetEnvironmentVariable("PHI2NATIVE_REQUIRE_TORCH") == "1") Assert.Fail(why + ", and PHI2NATIVE_REQUIRE_TORCH=1 requires it");
        Assert.Ignore(why);
    }

    [Test]
    public void TheDryRunTimesAttentionOnTheCpuAndPrintsTheRatioAgainstOurs()
    {
        RequireTorch();
        string ours = Path.Combine(Temp, "ours.json");
        // Our forward and backward medians: their sum, 0.5 ms, is what the row divides by.
        File.WriteAllText(ours, """
            {"device": "test", "sizes": "tiny", "cases": [
              {"name": "attention forward (causal)", "status": "Ran", "ms": 0.2, "rate": 1, "unit": "TFLOP/s", "reps": 2},
              {"name": "attention backward (causal)", "status": "Ran", "ms": 0.3, "rate": 1, "unit": "TFLOP/s", "reps": 2},
              {"name": "model decode step (KV cache)", "status": "NotRun", "ms": null, "rate": null, "unit": "", "reps": 0}]}
            """);
        var (code, output, error) = RunPython(Script, "--dry-run", "--ours", ours);
        Assert.That(code, Is.EqualTo(0), output + error);
        Assert.That(output, Does.Contain("peers on CPU (dry run: tiny sizes)"));
        Assert.That(output, Does.Contain("decode: skipped: --dry-run").And.Contain("lora: skipped: --dry-run"));
        Assert.That(output, Does.Contain("backend that ran: "));
        var row = SdpaRow().Match(output);
        Assert.That(row.Success, output);
        double theirs = double.Parse(row.Groups["theirs"].Value, CultureInfo.InvariantCulture);
        double ratio = double.Parse(row.Groups["ratio"].Value, CultureInfo.InvariantCulture);
        Assert.That(row.Groups["ours"].Value, Is.EqualTo("0.500"));
        Assert.That(ratio, Is.EqualTo(theirs / 0.5).Within(0.006 + 0.001 * ratio), "ours / theirs speed = their ms over ours");
    }

    [Test]
    public void WithoutAGpuItSaysSoAndExits2()
    {
        RequireTorch();
        if (RunPython("-c", "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)").Code == 0) Assert.Ignore("torch sees a GPU here");
        var (code, output, error) = RunPython(Script);
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error.Trim(), Does.StartWith("error: no GPU: torch ").And.Contain("--dry-run"));
        Assert.That(output, Is.Empty);
    }

    [Test]
    public void WithoutTorchItSaysSoAndExits2()
    {
        if (!File.Exists(Python)) Assert.Ignore($"{Python} is missing");
        // -S leaves out site-packages, where Debian's torch is: a Python without torch.
        var (code, _, error) = RunPython("-S", Script, "--dry-run");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error.Trim(), Does.StartWith("error: torch is not importable by "));
    }

    [Test]
    public void EveryCaseOfOursTheScriptComparesWithIsABenchmarkCase()
    {
        // The script finds our figures by case name in the results file; a renamed case would leave its row without ours.
        var names = OursConstant().Matches(File.ReadAllText(Script)).SelectMany(m => QuotedName().Matches(m.Groups["value"].Value)).Select(m => m.Groups[1].Value).ToList();
        Assert.That(names, Has.Count.GreaterThanOrEqualTo(5), "OURS_SDPA (2), OURS_DECODE, OURS_DECODE_EAGER, OURS_LORA");
        Assert.That(names, Is.SubsetOf(Phi2Native.GpuCheck.Benchmarks.CaseNames.ToList()));
    }

    [GeneratedRegex(@"^OURS_[A-Z_]+ = (?<value>.*)$", RegexOptions.Multiline)]
    private static partial Regex OursConstant();

    [GeneratedRegex("\"([^\"]+)\"")]
    private static partial Regex QuotedName();

    [GeneratedRegex(@"^sdpa forward\+backward\s+(?<ours>[0-9.]+)\s+(?<theirs>[0-9.]+)\s+(?<ratio>[0-9.]+)x$", RegexOptions.Multiline)]
    private static partial Regex SdpaRow();
}
