using NUnit.Framework;
using Phi2Native.DeviceChecks;
using Phi2Native.GpuCheck;

namespace Phi2Native.Tests.GpuCheck;

/// <summary>Finding compute-sanitizer (over a fake file tree) and reading its summary.</summary>
[TestFixture]
public class SanitizerTests
{
    /// <summary>A file tree given as its files' paths; folders are what lies above them.</summary>
    private sealed class FakeTree(params string[] files) : IFileView
    {
        public bool IsFile(string path) => files.Contains(path);

        public IEnumerable<string> Folders(string folder)
        {
            string prefix = folder.TrimEnd('/') + "/";
            return files.Where(f => f.StartsWith(prefix, StringComparison.Ordinal))
                .Select(f => f[prefix.Length..])
                .Where(rest => rest.Contains('/'))
                .Select(rest => prefix + rest[..rest.IndexOf('/')])
                .Distinct();
        }
    }

    private static Func<string, string?> Env(params (string Name, string Value)[] variables) =>
        name => variables.FirstOrDefault(v => v.Name == name).Value;

    private static string? Find(FakeTree tree, Func<string, string?> env, out string reason) => CudaToolLocator.FindSanitizer(env, "/runner", tree, out reason);

    [Test]
    public void PathComesFirst()
    {
        var tree = new FakeTree("/tools/compute-sanitizer", "/usr/local/cuda/bin/compute-sanitizer");
        Assert.That(Find(tree, Env(("PATH", "/nothing:/tools")), out _), Is.EqualTo("/tools/compute-sanitizer"));
    }

    [Test]
    public void TheToolsCiUnpacksComeBeforePath()
    {
        var tree = new FakeTree("/cache/cuda/bin/compute-sanitizer", "/tools/compute-sanitizer");
        Assert.That(Find(tree, Env(("PATH", "/tools"), ("PHI2NATIVE_CUDA_TOOLS", "/cache/cuda")), out _), Is.EqualTo("/cache/cuda/bin/compute-sanitizer"));
    }

    [Test]
    public void TheCiLayoutAndTheCopyCarriedBesideTheRunnerAreFoundLast()
    {
        // .ci/cuda-tools.sh keeps compute-sanitizer in its own folder (it needs the libraries beside it); gpu-check.sh
        // --build carries that layout to runner/cuda-tools/, which loses to any toolkit the GPU machine has.
        var carried = new FakeTree("/runner/cuda-tools/compute-sanitizer/compute-sanitizer", "/runner/cuda-tools/bin/cuobjdump");
        Assert.That(Find(carried, Env(), out _), Is.EqualTo("/runner/cuda-tools/compute-sanitizer/compute-sanitizer"));
        Assert.That(CudaToolLocator.Find(CudaToolLocator.Cuobjdump, Env(), "/runner", carried), Is.EqualTo("/runner/cuda-tools/bin/cuobjdump"));
        var both = new FakeTree("/runner/cuda-tools/bin/cuobjdump", "/usr/local/cuda/bin/cuobjdump");
        Assert.That(CudaToolLocator.Find(CudaToolLocator.Cuobjdump, Env(), "/runner", both), Is.EqualTo("/usr/local/cuda/bin/cuobjdump"));
        var ci = new FakeTree("/cache/cuda/compute-sanitizer/compute-sanitizer");
        Assert.That(Find(ci, Env(("PHI2NATIVE_CUDA_TOOLS", "/cache/cuda")), out _), Is.EqualTo("/cache/cuda/compute-sanitizer/compute-sanitizer"));
    }

    [Test]
    public void CudaHomeThenTheToolkitFolders()
    {
        var tree = new FakeTree("/opt/cuda-x/bin/compute-sanitizer", "/usr/local/cuda-12.4/bin/compute-sanitizer", "/usr/local/cuda-13.0/bin/compute-sanitizer");
        Assert.That(Find(tree, Env(("CUDA_HOME", "/opt/cuda-x")), out _), Is.EqualTo("/opt/cuda-x/bin/compute-sanitizer"));
        Assert.That(Find(tree, Env(), out _), Is.EqualTo("/usr/local/cuda-13.0/bin/compute-sanitizer"), "the newest toolkit first");
    }

    [Test]
    public void TheVenvsNvidiaWheelsAreSearched()
    {
        var cu13 = new FakeTree("/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/bin/compute-sanitizer");
        Assert.That(Find(cu13, Env(), out _), Is.EqualTo("/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/bin/compute-sanitizer"));
        var wheel = new FakeTree("/opt/torch/.venv/lib/python3.11/site-packages/nvidia/cuda_sanitizer_api/compute-sanitizer/compute-sanitizer");
        Assert.That(Find(wheel, Env(), out _), Is.EqualTo("/opt/torch/.venv/lib/python3.11/site-packages/nvidia/cuda_sanitizer_api/compute-sanitizer/compute-sanitizer"));
        var venv = new FakeTree("/home/u/env/lib/python3.12/site-packages/nvidia/cuda_nvcc/bin/compute-sanitizer");
        Assert.That(Find(venv, Env(("VIRTUAL_ENV", "/home/u/env")), out _), Is.EqualTo("/home/u/env/lib/python3.12/site-packages/nvidia/cuda_nvcc/bin/compute-sanitizer"));
    }

    [Test]
    public void TheVariableNamesItOrTurnsItOff()
    {
        var tree = new FakeTree("/x/cs", "/usr/local/cuda/bin/compute-sanitizer");
        Assert.That(Find(tree, Env((CudaToolLocator.SanitizerVariable, "/x/cs")), out _), Is.EqualTo("/x/cs"));
        Assert.That(Find(tree, Env((CudaToolLocator.SanitizerVariable, "/x/missing")), out string missing), Is.Null);
        Assert.That(missing, Does.Contain("is not a file"));
        Assert.That(Find(tree, Env((CudaToolLocator.SanitizerVariable, "off")), out string off), Is.Null);
        Assert.That(off, Does.Contain("turns it off"));
    }

    [Test]
    public void NotFoundSaysWhereItLooked()
    {
        Assert.That(Find(new FakeTree(), Env(("PATH", "/usr/bin")), out string reason), Is.Null);
        Assert.That(reason, Does.StartWith("compute-sanitizer not found").And.Contain(CudaToolLocator.SanitizerVariable));
    }

    [Test]
    public void TheErrorSummaryIsRead()
    {
        Assert.That(SanitizerStage.ErrorSummary("========= ERROR SUMMARY: 0 errors"), Is.EqualTo(0));
        Assert.That(SanitizerStage.ErrorSummary("========= ERROR SUMMARY: 1 error"), Is.EqualTo(1));
        Assert.That(SanitizerStage.ErrorSummary("========= ERROR SUMMARY: 12 errors, 2 errors were not printed"), Is.EqualTo(12));
        Assert.That(SanitizerStage.ErrorSummary("========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)"), Is.Null);
        Assert.That(SanitizerStage.ErrorSummary("========= Invalid __shared__ write of size 4 bytes"), Is.Null);
    }

    [Test]
    public void TheSanitizedFamiliesExistAndHaveChecks()
    {
        var families = DeviceCheckCatalog.Families.ToDictionary(f => f.Name);
        Assert.That(SanitizerStage.Families, Is.Unique);
        foreach (string name in SanitizerStage.Families)
            Assert.That(families.TryGetValue(name, out var family) && family.Checks.Count > 0, $"no family '{name}' with checks");
        Assert.That(SanitizerStage.UnknownFamilies(), Is.Empty);
    }
}
