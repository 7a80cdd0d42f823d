using NUnit.Framework;
using Phi2Native.Backends;
using Phi2Native.Backends.Cpu;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Emulator;
using Phi2Native.Cuda.Native;
using Phi2Native.Hosting;
using Phi2Native.Tensors;

namespace Phi2Native.Tests.Backends;

/// <summary>DeviceChoice's spellings and what it opens, and the dtype rules of ComputeDTypes.</summary>
[TestFixture]
public class DeviceChoiceTests
{
    [TestCase("cpu", DeviceKind.Cpu, 0, "cpu")]
    [TestCase(" CPU ", DeviceKind.Cpu, 0, "cpu")]
    [TestCase("cuda", DeviceKind.Cuda, 0, "cuda:0")]
    [TestCase("cuda:3", DeviceKind.Cuda, 3, "cuda:3")]
    [TestCase("emulated", DeviceKind.Emulated, 0, "emulated")]
    public void SpellingsParseAndPrintBack(string text, DeviceKind kind, int ordinal, string printed)
    {
        var choice = DeviceChoice.Parse(text);
        Assert.That(choice.Kind, Is.EqualTo(kind));
        Assert.That(choice.Ordinal, Is.EqualTo(ordinal));
        Assert.That(choice.ToString(), Is.EqualTo(printed));
        Assert.That(DeviceChoice.Parse(printed), Is.EqualTo(choice));
    }

    [TestCase("tpu")]
    [TestCase("cuda:")]
    [TestCase("cuda:-1")]
    [TestCase("cuda:x")]
    [TestCase("cuda0")]
    [TestCase("")]
    public void OtherTextIsNotADevice(string text)
    {
        Assert.That(DeviceChoice.TryParse(text, out _), Is.False);
        Assert.That(() => DeviceChoice.Parse(text), Throws.InstanceOf<FormatException>().With.Message.Contain("cpu, cuda, cuda:N"));
    }

    [Test]
    public void TheCpuChoiceIsTheSharedCpuBackendWhichTheCallerDoesNotOwn()
    {
        Assert.That(DeviceChoice.Cpu.CreateBackend(), Is.SameAs(CpuBackend.Default));
        Assert.That(DeviceChoice.Cpu.OwnsBackend, Is.False);
        Assert.That(DeviceChoice.Emulated.OwnsBackend, Is.True);
    }

    [Test]
    public void OpeningAGpuWhereThereIsNoneIsAPhi2ExceptionWithTheProbesReason()
    {
        var probe = CudaAvailability.Probe();
        if (probe.IsAvailable) Assert.Ignore($"this machine has a GPU ({probe.Summary})");
        Assert.That(() => DeviceChoice.Cuda(0).CreateBackend(), Throws.InstanceOf<Phi2Exception>().With.Message.Contain(probe.Reason!));
    }

    [Test, Category("Emulated")]
    public void TheEmulatedChoiceOpensACudaBackendThatOwnsItsDevice()
    {
        var backend = DeviceChoice.Emulated.CreateBackend();
        Assert.That(backend, Is.InstanceOf<Phi2Native.Backends.Cuda.CudaBackend>());
        Assert.That(backend.Device.Kind, Is.EqualTo(DeviceKind.Emulated));
        Assert.That(backend.Device.ToString(), Is.EqualTo("emulated"), "the device is named as --device names it");
        backend.Dispose();
        Assert.That(((Phi2Native.Backends.Cuda.CudaBackend)backend).DeviceApi, Is.InstanceOf<EmulatedDevice>());
    }

    [Test]
    public void Bf16IsForTheCudaBackendWithOrWithoutAnAdapterAndForLoraTraining()
    {
        Assert.That(ComputeDTypes.InferenceRefusal(DeviceKind.Cpu, DType.F32, withAdapter: true), Is.Null);
        Assert.That(ComputeDTypes.InferenceRefusal(DeviceKind.Cuda, DType.BF16, withAdapter: false), Is.Null);
        Assert.That(ComputeDTypes.InferenceRefusal(DeviceKind.Cpu, DType.BF16, withAdapter: false), Does.Contain("f32 only"));
        Assert.That(ComputeDTypes.InferenceRefusal(DeviceKind.Cuda, DType.BF16, withAdapter: true), Is.Null);
        Assert.That(ComputeDTypes.InferenceRefusal(DeviceKind.Cpu, DType.BF16, withAdapter: true), Does.Contain("f32 only"));
        Assert.That(ComputeDTypes.InferenceRefusal(DeviceKind.Cuda, DType.F16, withAdapter: false), Does.Contain("f32 or bf16"));
        Assert.That(ComputeDTypes.TrainingRefusal(DeviceKind.Cuda, DType.F32), Is.Null);
        Assert.That(ComputeDTypes.TrainingRefusal(DeviceKind.Cuda, DType.BF16), Is.Null);
        Assert.That(ComputeDTypes.TrainingRefusal(DeviceKind.Cpu, DType.BF16), Does.Contain("CPU backend"));
    }
}
