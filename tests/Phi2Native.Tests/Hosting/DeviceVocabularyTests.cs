using System.Text.RegularExpressions;
using NUnit.Framework;
using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda.Emulator;
using Phi2Native.Hosting;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Hosting;

/// <summary>
/// One device vocabulary, the command line's cpu | cuda | cuda:N | emulated, everywhere a device is named; and the
/// device seam (IDeviceApi) says its own kind, ordinal and how to release cached memory, so nothing above it tests for
/// CudaDevice or EmulatedDevice.
/// </summary>
[TestFixture]
public partial class DeviceVocabularyTests
{
    [Test]
    public void NothingAboveTheDeviceSeamTestsForTheDeviceTypes()
    {
        var offenders = new List<string>();
        foreach (var project in new[] { "Phi2Native.Backends", "Phi2Native", "Phi2Native.Cli" })
            foreach (var file in Directory.EnumerateFiles(Path.Combine(Fixtures.RepositoryRoot, "src", project), "*.cs", SearchOption.AllDirectories))
            {
                if (file.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}", StringComparison.Ordinal)) continue;
                var lines = File.ReadAllLines(file);
                for (int i = 0; i < lines.Length; i++)
                    if (TypeTest().IsMatch(lines[i])) offenders.Add($"{Path.GetRelativePath(Fixtures.RepositoryRoot, file)}:{i + 1}: {lines[i].Trim()}");
            }
        Assert.That(offenders, Is.Empty);
    }

    // "is CudaDevice", "as EmulatedDevice", "{ DeviceApi: EmulatedDevice }", "case CudaDevice", "is not EmulatedDevice".
    [GeneratedRegex(@"\b(is|as|case)\s+(not\s+)?(CudaDevice|EmulatedDevice)\b|:\s*(CudaDevice|EmulatedDevice)\s*\}")]
    private static partial Regex TypeTest();

    [Test]
    public void TheCpuIsNamedCpuEverywhere()
    {
        using var compute = ComputeBackend.Open(DeviceChoice.Parse("cpu"), DType.F32, ComputeUse.Training);
        Assert.That(compute.Backend.Device.ToString(), Is.EqualTo("cpu"));
        Assert.That(DeviceChoice.Of(compute.Backend.Device), Is.EqualTo(DeviceChoice.Cpu));
        Assert.That(compute.Description, Does.StartWith("cpu (").And.EndWith(", f32"));
    }

    [Test, Category("Emulated")]
    public void TheEmulatedDeviceIsNamedEmulatedEverywhere()
    {
        using var device = new EmulatedDevice();
        Assert.That(device.Kind, Is.EqualTo(DeviceKind.Emulated), "the seam says what it is");
        Assert.That(((Phi2Native.Cuda.IDeviceApi)device).Ordinal, Is.EqualTo(0));
        Assert.That(((Phi2Native.Cuda.IDeviceApi)device).ReleaseCachedMemory(default), Is.EqualTo(0), "it caches nothing");

        using var compute = ComputeBackend.Open(DeviceChoice.Parse("emulated"), DType.BF16, ComputeUse.Training);
        Assert.That(compute.Backend, Is.InstanceOf<CudaBackend>(), "the CUDA backend's code");
        Assert.That(compute.Backend.Device.ToString(), Is.EqualTo("emulated"), "its tensors say emulated, not cuda:0");
        Assert.That(DeviceChoice.Of(compute.Backend.Device), Is.EqualTo(DeviceChoice.Emulated));
        Assert.That(compute.Description, Does.StartWith("emulated, bf16"));
        Assert.That(ComputeDTypes.TrainingRefusal(compute.Backend.Device.Kind, DType.BF16), Is.Null, "the emulated device is the CUDA backend's: bf16 is fine");
        compute.Backend.ReleaseCachedMemory();
    }

    [Test]
    public void ARefusalNamesTheDeviceAsTheCommandLineDoes()
    {
        var refused = Assert.Throws<Phi2Exception>(() => ComputeBackend.Check(DeviceChoice.Cpu, DType.BF16, ComputeUse.Inference))!;
        Assert.That(refused.Message, Does.StartWith("--dtype bf16 on --device cpu: "));
        Assert.That(() => ComputeBackend.Check(DeviceChoice.Emulated, DType.BF16, ComputeUse.InferenceWithAdapter), Throws.Nothing);
    }
}
