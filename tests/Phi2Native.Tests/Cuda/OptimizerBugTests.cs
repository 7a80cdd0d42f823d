using NUnit.Framework;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Emulator;
using Phi2Native.DeviceChecks;

namespace Phi2Native.Tests.Cuda;

/// <summary>
/// Planted bugs in kernels/optimizer.cu must fail the optimizer device checks that the real kernels pass
/// (<see cref="EmulatedDeviceCheckTests"/> runs those): an update that ignores the status's verdict, and chunk sums that
/// read every other element. g++ builds an emulator from the edited file at run time (about 15 s).
/// </summary>
[TestFixture, Category("Emulated")]
public class OptimizerBugTests : Support.TemporaryDirectoryTest
{
    private static readonly (string Line, string Planted)[] Bugs =
    [
        ("if (status != nullptr && status->skip) return;", "// planted: the verdict is ignored"),
        ("for (int i = (int)threadIdx.x; i < chunk.count; i += (int)blockDim.x)", "for (int i = (int)threadIdx.x; i < chunk.count; i += 2 * (int)blockDim.x) // planted"),
    ];

    [Test]
    public void TheOptimizerChecksCatchBothPlantedBugs()
    {
        string source = KernelSourceCatalog.Embedded.SourceOf("optimizer.cu");
        foreach (var (line, planted) in Bugs)
        {
            Assert.That(source, Does.Contain(line), "the line this test plants a bug in");
            source = source.Replace(line, planted, StringComparison.Ordinal);
        }
        string folder = Path.Combine(Temp, "kernels");
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "optimizer.cu"), source);
        var options = new KernelSourceOptions { Directory = folder, Setting = "PHI2NATIVE_KERNEL_SOURCES" };
        var checks = OptimizerChecks.All.ToDictionary(c => c.Name);
        using var device = EmulatedDevice.Open(options, KernelCacheOptions.InDirectory(Path.Combine(Temp, "cache")));

        var skipped = checks["adamw_chunks_f32: a skipped step changes nothing"].Run(device);
        Assert.That(skipped.Passed, Is.False, $"an update that ignores the verdict: {skipped}");
        var measured = checks["gradient check f32/bf16/f16, nulls, 2 losses, clipping"].Run(device);
        Assert.That(measured.Passed, Is.False, $"chunk sums over half the elements: {measured}");
    }
}
