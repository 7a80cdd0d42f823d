using NUnit.Framework;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Emulator;
using Phi2Native.Cuda.Native;
using Phi2Native.DeviceChecks;

namespace Phi2Native.Tests.Cuda;

/// <summary>Every check of <see cref="DeviceCheckCatalog"/> on the emulated device: the CUDA path, run in CI.</summary>
[TestFixture, Category("Emulated")]
public class EmulatedDeviceCheckTests
{
    private static IEnumerable<TestCaseData> Checks => DeviceCheckCatalog.All.Select(c => new TestCaseData(c).SetName(c.Name));

    [TestCaseSource(nameof(Checks))]
    public void Passes(DeviceCheck check)
    {
        using var device = new EmulatedDevice();
        var result = check.Run(device);
        TestContext.Out.WriteLine(result.ToString()); // how close a passing check came to its tolerance
        Assert.That(result.Passed, result.ToString());
        Assert.That(device.Memory.LiveAllocations, Is.Zero, "the check must free what it allocates");
    }
}

/// <summary>The same checks on the first GPU; ignored, with the reason, where there is none; failed where a GPU does not open (<see cref="Support.GpuGate"/>).</summary>
[TestFixture, Category("Gpu"), NonParallelizable]
public class GpuDeviceCheckTests
{
    private IDeviceApi? _device;

    private static IEnumerable<TestCaseData> Checks => DeviceCheckCatalog.All.Select(c => new TestCaseData(c).SetName("gpu: " + c.Name));

    [OneTimeSetUp]
    public void Open()
    {
        _device = GpuDevices.TryOpen(out string reason);
        Support.GpuGate.Require(_device is null && CudaAvailability.Probe().IsAvailable ? reason : null);
    }

    [OneTimeTearDown]
    public void Close() => _device?.Dispose();

    [TestCaseSource(nameof(Checks))]
    public void Passes(DeviceCheck check)
    {
        var result = check.Run(_device!);
        Assert.That(result.Passed, result.ToString());
    }
}

/// <summary>The comparison itself must be able to fail, or every check above proves nothing.</summary>
[TestFixture]
public class CheckResultTests
{
    [Test]
    public void AWrongValueOrAMissingNaNFails()
    {
        Assert.That(CheckResult.Compare("y", [1f, 2f], [1f, 2f], 0, 0).Passed, Is.True);
        Assert.That(CheckResult.Compare("y", [1f, 2.001f], [1f, 2f], 1e-4, 0).Passed, Is.False);
        Assert.That(CheckResult.Compare("y", [1f, float.NaN], [1f, 2f], 1, 1).Passed, Is.False);
        Assert.That(CheckResult.Compare("y", [1f, 2f], [1f, float.NaN], 1, 1).Passed, Is.False);
        Assert.That(CheckResult.Compare("y", [float.NaN], [float.NaN], 0, 0).Passed, Is.True);
        Assert.That(CheckResult.Compare("y", [1f], [1f, 2f], 1, 1).Passed, Is.False);
    }

    [Test]
    public void TheDetailNamesTheWorstElement()
    {
        var r = CheckResult.Compare("dX", [1f, 5f, 3f], [1f, 2f, 3f], 0.1, 0);
        Assert.That(r.Detail, Does.StartWith("dX[1] = 5, expected 2"));
        Assert.That(r.MaxAbsoluteError, Is.EqualTo(3).Within(1e-12));
    }

    [Test]
    public void CheckNamesAreUnique() =>
        Assert.That(DeviceCheckCatalog.All.Select(c => c.Name), Is.Unique);

    [Test]
    public void FamiliesPartitionTheCatalogInOrder()
    {
        // The GPU runner runs each family in a child process by name, and CI compares its count with NUnit's.
        var families = DeviceCheckCatalog.Families;
        Assert.That(families.Select(f => f.Name), Is.Unique);
        Assert.That(families.Select(f => f.Name), Has.All.Matches<string>(n => n.Length > 0 && n == n.ToLowerInvariant() && !n.Contains(',') && !n.Contains(' ')));
        Assert.That(families, Has.All.Matches<DeviceCheckFamily>(f => f.Checks.Count > 0));
        Assert.That(families.SelectMany(f => f.Checks), Is.EqualTo(DeviceCheckCatalog.All));
    }
}
