using NUnit.Framework;
using Phi2Native.Backends;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Emulator;
using Phi2Native.Cuda.Native;
using Phi2Native.Hosting;
using Phi2Native.Tensors;
using Phi2Native.Text;

namespace Phi2Native.Tests.Text;

/// <summary>The host API's device and dtype: Phi2Engine.Load(Phi2EngineOptions) on the emulated CUDA backend, and its refusals.</summary>
[TestFixture]
public class Phi2EngineDeviceTests
{
    private static readonly GenerationOptions Short = new() { MaxNewTokens = 6 };

    [Test]
    public void TheDefaultIsStillTheCpuInF32()
    {
        using var engine = Phi2Engine.Load();
        Assert.That(engine.Backend, Is.SameAs(CpuBackend.Default));
        Assert.That(engine.DType, Is.EqualTo(DType.F32));
    }

    [Test, Category("Emulated")]
    public async Task TheEmulatedDeviceGivesTheCpusGreedyTokensAndIsDisposedWithTheEngine()
    {
        using var cpu = Phi2Engine.Load();
        var expected = new Generator(cpu.Model, cpu.Tokenizer).Generate("And God said", Short).Tokens;

        var engine = Phi2Engine.Load(new Phi2EngineOptions { Device = DeviceChoice.Emulated });
        var backend = (CudaBackend)engine.Backend;
        Assert.That(backend.DeviceApi, Is.InstanceOf<EmulatedDevice>());
        var streamed = new List<int>();
        await foreach (var token in engine.GenerateAsync("And God said", Short)) streamed.Add(token.Id);
        Assert.That(streamed, Is.EqualTo(expected));
        engine.Dispose();
        Assert.That(backend.IsDisposed, Is.True, "the engine opened the backend, so it frees it (and its device memory)");
    }

    [Test, Category("Emulated")]
    public void AHostsBackendIsUsedAndLeftOpen()
    {
        using var device = new EmulatedDevice();
        using var backend = new CudaBackend(device, ownsDevice: false);
        using (var engine = Phi2Engine.Load(new Phi2EngineOptions { Backend = backend, DType = DType.BF16 }))
        {
            Assert.That(engine.Backend, Is.SameAs(backend));
            Assert.That(engine.DType, Is.EqualTo(DType.BF16));
            Assert.That(engine.Model.Parameters().All(p => p.DType == DType.BF16), Is.True);
            Assert.That(new Generator(engine.Model, engine.Tokenizer).Generate("And God said", Short).Tokens, Has.Count.EqualTo(6));
        }
        Assert.That(backend.IsDisposed, Is.False, "the host's backend is the host's to dispose");
        // What is left is the backend's own: the split-K decode's counters (CudaBackend.ZeroedCounters), kept for its life.
        Assert.That(device.Memory.LiveAllocations, Is.EqualTo(1), "the engine freed its model on the host's device");
        backend.Dispose();
        Assert.That(device.Memory.LiveAllocations, Is.Zero, "the backend's counters go with it");
    }

    [Test, Category("Emulated")]
    public void KernelSourceDirectory_IsUsedByTheDeviceTheEngineOpens_AndSaidThroughWarn()
    {
        string folder = Support.Fixtures.TemporaryDirectory();
        try
        {
            File.WriteAllText(Path.Combine(folder, "common.cuh"), KernelSourceCatalog.Embedded.Headers.Single(h => h.Name == "common.cuh").Text);
            var warnings = new List<string>();
            using (var engine = Phi2Engine.Load(new Phi2EngineOptions { Device = DeviceChoice.Emulated, KernelSourceDirectory = folder, Warn = warnings.Add }))
                Assert.That(((CudaBackend)engine.Backend).DeviceApi.Name, Is.EqualTo($"emulated (libphi2emu, kernels from {folder})"));
            Assert.That(warnings, Has.One.StartWith(
                $"kernel sources from {folder} (Phi2EngineOptions.KernelSourceDirectory): common.cuh (as embedded);"));

            string missing = Path.Combine(folder, "missing");
            Assert.That(() => Phi2Engine.Load(new Phi2EngineOptions { Device = DeviceChoice.Emulated, KernelSourceDirectory = missing }),
                Throws.InstanceOf<Phi2Exception>().With.Message.StartWith($"Phi2EngineOptions.KernelSourceDirectory={missing}: no such folder"));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Test]
    public void Bf16OnTheCpuIsRefusedWithOrWithoutAnAdapterBeforeAnythingOpens()
    {
        Assert.That(() => Phi2Engine.Load(new Phi2EngineOptions { DType = DType.BF16 }),
            Throws.InstanceOf<Phi2Exception>().With.Message.Contain("f32 only"));
        // The adapter folder does not exist: the combination is refused before it would be read. (An adapter over a bf16
        // base on the CUDA backend is not refused: its fp32 branch computes beside the bf16 base.)
        Assert.That(() => Phi2Engine.Load(new Phi2EngineOptions { DType = DType.BF16, AdapterDirectory = "/no/such/adapter" }),
            Throws.InstanceOf<Phi2Exception>().With.Message.Contain("f32 only"));
    }

    [Test]
    public void ACudaDeviceWhereThereIsNoneIsAPhi2ExceptionWithTheReason()
    {
        var probe = CudaAvailability.Probe();
        if (probe.IsAvailable) Assert.Ignore($"this machine has a GPU ({probe.Summary})");
        Assert.That(() => Phi2Engine.Load(new Phi2EngineOptions { Device = DeviceChoice.Cuda() }),
            Throws.InstanceOf<Phi2Exception>().With.Message.Contain(probe.Reason!));
    }
}
