using System.Text.Json;
using NUnit.Framework;
using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Profiling;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Profiling;

/// <summary>`phi2 profile`'s JSON and Chrome trace, its refusals, and that profiling costs nothing while it is off.</summary>
[TestFixture]
public class ProfileOutputTests : TemporaryDirectoryTest
{
    [Test, Category("Emulated")]
    public void JsonHasTheHarnessFields_AndTheTraceParsesWithAnEventPerLaunch()
    {
        string trace = Path.Combine(Temp, "trace.json");
        var (code, output, error) = Phi2("profile", "--device", "emulated", "--what", "decode", "--seq", "4", "--layers", "2", "--json", "--trace", trace);
        Assert.That(code, Is.EqualTo(0), error);
        using var json = JsonDocument.Parse(output);
        var root = json.RootElement;
        foreach (string field in new[] { "device", "what", "batch", "seq", "launches", "host_syncs", "allocations", "bytes", "flops", "kernels",
                     "model_h100_ms", "model_h200_ms", "model_h100_mfu", "model_h200_mfu" })
            Assert.That(root.TryGetProperty(field, out _), $"field {field}");
        Assert.That(root.GetProperty("device").GetString(), Is.EqualTo("emulated"));
        Assert.That(root.GetProperty("what").GetString(), Is.EqualTo("decode"));
        Assert.That(root.GetProperty("launches").GetInt32(), Is.EqualTo(7 * 2 + 3), "7 a layer (fp32: q/k/v one GEMM and one kernel, fc1 and gelu_new one GEMM, the residual sum in dense's and fc2's GEMMs), 3 a token (ProfileCountTests)");
        var kernel = root.GetProperty("kernels")[0];
        foreach (string field in new[] { "name", "calls", "bytes", "flops", "measured_ms", "model_h100_ms", "model_h200_ms" })
            Assert.That(kernel.TryGetProperty(field, out _), $"kernels[0].{field}");
        Assert.That(kernel.GetProperty("measured_ms").ValueKind, Is.EqualTo(JsonValueKind.Null), "the emulator's host times are not shown");
        Assert.That(root.GetProperty("kernels").EnumerateArray().Sum(k => k.GetProperty("model_h100_ms").GetDouble()),
            Is.EqualTo(root.GetProperty("model_h100_ms").GetDouble()).Within(1e-9), "the step is the sum of its rows");

        using var chrome = JsonDocument.Parse(File.ReadAllText(trace));
        var events = chrome.RootElement.GetProperty("traceEvents").EnumerateArray().ToList();
        var complete = events.Where(e => e.GetProperty("ph").GetString() == "X").ToList();
        int copies = root.GetProperty("kernels").EnumerateArray().Where(k => k.GetProperty("name").GetString() is "Fill" or "CopyOnDevice")
            .Sum(k => k.GetProperty("calls").GetInt32());
        Assert.That(complete, Has.Count.EqualTo(7 * 2 + 3 + copies), "one complete event per launch, GEMM and device copy");
        Assert.That(complete.Select(e => e.GetProperty("name").GetString()), Does.Contain("cublasLtMatmul").And.Contain("cached_attention_f32"));
        Assert.That(complete.All(e => e.GetProperty("dur").GetDouble() > 0), "modelled durations on the emulator");
        Assert.That(chrome.RootElement.GetProperty("otherData").GetProperty("durations").GetString(), Does.StartWith("modelled"));
    }

    [Test]
    public void OnTheCpuTheTableShowsMeasuredTimes()
    {
        var (code, output, error) = Phi2("profile", "--what", "prefill", "--seq", "8");
        Assert.That(code, Is.EqualTo(0), error);
        Assert.That(output, Does.Contain("measured ms").And.Contain("Linear").And.Contain("modelled"));
        Assert.That(error, Does.Contain("profile: measured step"), "progress on standard error");
    }

    [TestCase("--what", "fly", "--what \"fly\" is not one of train, lora, decode, prefill")]
    [TestCase("--config", "gpt2", "--config \"gpt2\" is not one of embedded, phi2")]
    [TestCase("--seq", "1", "--seq must be at least 2")]
    [TestCase("--batch", "0", "--batch must be at least 1")]
    [TestCase("--layers", "0", "--layers must be at least 1")]
    public void BadOptionsAreOneMessageAndExitCode2(string option, string value, string message)
    {
        string[] args = option == "--what" ? ["profile", option, value] : ["profile", "--what", "decode", option, value];
        var (code, _, error) = Phi2(args);
        Assert.That(code, Is.EqualTo(2), error);
        Assert.That(error, Does.Contain(message));
    }

    [Test]
    public void ATraceIntoAMissingFolderFailsBeforeComputing()
    {
        var (code, _, error) = Phi2("profile", "--what", "decode", "--trace", Path.Combine(Temp, "missing", "t.json"));
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error, Does.Contain("does not exist"));
    }

    [Test]
    public void WhileNothingRecordsLaunchersAndScopesAllocateNothing()
    {
        var device = new NullDevice();
        ulong a = 1UL << 40;
        void Launch()
        {
            using var op = ProfileScope.Op("Linear", Phi2Native.Backends.Cpu.CpuBackend.Default);
            using var module = ProfileScope.Module("model.layers.0.mlp.fc1");
            using var phase = ProfileScope.Phase(ProfilePhase.Forward);
            ElementwiseKernels.Add(device, Phi2Native.Tensors.DType.F32, new DevicePtr(a), new DevicePtr(2 * a), new DevicePtr(3 * a), 1 << 20);
        }
        Launch();
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 1000; i++) Launch();
        long launching = GC.GetAllocatedBytesForCurrentThread() - before;
        // The launcher builds its kernel's name ("add_f32") each call, as it did before profiling; nothing else may allocate.
        before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 1000; i++) _ = KernelName.For("add", Phi2Native.Tensors.DType.F32, Phi2Native.Tensors.DType.F32);
        long names = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.That(launching, Is.EqualTo(names), "the cost declaration, the seam's null check and the scopes allocate nothing");
        Assert.That(device.Launches, Is.EqualTo(1001));
    }

    // A device whose launches do nothing, so the test sees only what the launcher and the scopes allocate.
    private sealed class NullDevice : IDeviceApi
    {
        public int Launches;
        public void Launch(string kernelName, Dim3 grid, Dim3 block, int dynamicSharedBytes, DeviceStream stream, ReadOnlySpan<nint> argPointers,
            in KernelCost cost) => Launches++;
        public DeviceMemoryStatistics Memory => default;
        public IBlas Blas => throw new NotSupportedException();
        public string Name => "null";
        public Phi2Native.Tensors.DeviceKind Kind => Phi2Native.Tensors.DeviceKind.Emulated;
        public DevicePtr Allocate(long bytes) => throw new NotSupportedException();
        public void Free(DevicePtr pointer) { }
        public void CopyToDevice(DevicePtr destination, ReadOnlySpan<byte> source, DeviceStream stream) { }
        public void CopyToHost(Span<byte> destination, DevicePtr source, DeviceStream stream) { }
        public void CopyOnDevice(DevicePtr destination, DevicePtr source, long bytes, DeviceStream stream) { }
        public void Fill(DevicePtr pointer, byte value, long bytes, DeviceStream stream) { }
        public void Synchronize(DeviceStream stream) { }
        public DeviceStream CreateStream() => default;
        public void DestroyStream(DeviceStream stream) { }
        public DeviceEvent RecordEvent(DeviceStream stream) => default;
        public float ElapsedMilliseconds(DeviceEvent start, DeviceEvent end) => 0;
        public void DestroyEvent(DeviceEvent deviceEvent) { }
        public void Dispose() { }
    }
}
