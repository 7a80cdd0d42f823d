using NUnit.Framework;
using Phi2Native.Autograd;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda.Emulator;
using Phi2Native.FineTuning.Lora;
using Phi2Native.Models.Modules;
using Phi2Native.Models.Phi2;
using Phi2Native.Profiling;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.FineTuning;

/// <summary>
/// LoRA on q_proj, k_proj and v_proj through the fused q/k/v projection (QkvProjectionOp with LoraQkvOp's branches): the
/// emulated device against the CPU reference, and the fused path against the per-projection path it replaced (three
/// LoRA Linears, forced by an adapter the fused op cannot serve), with and without dropout.
/// </summary>
[TestFixture]
public class LoraQkvProjectionTests
{
    private static readonly int[] Ids = [5, 17, 202, 3, 99, 0, 150, 42];

    private static readonly object[] Targets = [new[] { "q_proj", "k_proj", "v_proj" }, new[] { "q_proj", "v_proj" }];

    [Test, Category("Emulated")]
    public void TheDeviceMatchesTheCpu_LogitsAndAdapterGradients(
        [ValueSource(nameof(Targets))] string[] targets, [Values(DType.F32, DType.BF16)] DType dtype)
    {
        var config = new LoraConfig { R = 2, Alpha = 4, TargetModules = targets };
        using var device = new EmulatedDevice();
        using var cuda = new CudaBackend(device, ownsDevice: false);
        var cpu = Run(new CpuBackend(), DType.F32, config, fallback: false, training: false, out var cpuEvents);
        var gpu = Run(cuda, dtype, config, fallback: false, training: false, out var gpuEvents);
        // The CPU records outermost ops only (LoraQkv runs inside QkvProjection): one QkvProjection per layer, no Lora.
        Assert.That(cpuEvents.Count(e => e.Kind == ProfileEventKind.CpuOp && e.Name == "QkvProjection"), Is.EqualTo(3), "the CPU's layers took the fused op");
        Assert.That(cpuEvents.Count(e => e.Kind == ProfileEventKind.CpuOp && e.Name == "Lora"), Is.Zero, "no per-projection LoRA on the CPU");
        Assert.That(gpuEvents.Count(e => e.Kind == ProfileEventKind.Kernel && e.Name.StartsWith("lora_qkv_down", StringComparison.Ordinal)
            && !e.Name.Contains("backward", StringComparison.Ordinal)), Is.EqualTo(3),
            "the device's layers took the fused op");
        Assert.That(gpuEvents.Where(e => e.Kind == ProfileEventKind.Kernel && e.Name.StartsWith("lora_down", StringComparison.Ordinal)), Is.Empty,
            "no per-projection LoRA");
        Assert.That(cpu.Keys.Count, Is.EqualTo(2 + 2 * 3 * targets.Length), "logits, loss, A and B of each target in 3 layers");
        foreach (var (name, expected) in cpu)
        {
            var tolerance = name is "logits" or "loss" ? Tolerance.Forward(dtype) : Tolerance.Gradient(dtype);
            TensorAssert.Close(name, expected, gpu[name], tolerance);
        }
    }

    [Test]
    public void TheFusedPathMatchesTheThreeLinearPathOnTheCpu([ValueSource(nameof(Targets))] string[] targets, [Values(0.0, 0.25)] double dropout)
    {
        var config = new LoraConfig { R = 2, Alpha = 4, Dropout = dropout, TargetModules = targets };
        var fused = Run(new CpuBackend(), DType.F32, config, fallback: false, training: true, out var fusedEvents);
        var unfused = Run(new CpuBackend(), DType.F32, config, fallback: true, training: true, out var unfusedEvents);
        // The CPU records outermost ops only (LoraQkv runs inside QkvProjection).
        Assert.That(fusedEvents.Count(e => e.Name == "QkvProjection"), Is.EqualTo(3));
        Assert.That(fusedEvents.Count(e => e.Name == "Lora"), Is.Zero);
        Assert.That(unfusedEvents.Count(e => e.Name == "QkvProjection"), Is.Zero, "the wrapped adapters keep the per-projection path");
        Assert.That(unfusedEvents.Count(e => e.Name == "Lora"), Is.EqualTo(3 * targets.Length));
        foreach (var (name, expected) in unfused)
        {
            var tolerance = name is "logits" or "loss" ? Tolerance.Forward(DType.F32) : Tolerance.Gradient(DType.F32);
            TensorAssert.Close(name, expected, fused[name], tolerance);
        }
    }

    // Logits, loss and every adapter gradient of one forward and backward over the fixture model, B randomized (PEFT
    // starts it at 0); with fallback, q/k/v's adapters are wrapped so that the fused op cannot serve them.
    private static Dictionary<string, float[]> Run(IBackend backend, DType dtype, LoraConfig config, bool fallback, bool training,
        out IReadOnlyList<ProfileEvent> events)
    {
        var results = new Dictionary<string, float[]>();
        using var model = Phi2Checkpoint.Load(Fixtures.ModelDirectory("bf16"), backend, dtype);
        using var lora = LoraModel.Create(model, config, seed: 7);
        var random = new Random(11);
        foreach (var tensor in lora.LinearAdapters.Select(a => a.B))
        {
            var values = tensor.ToSingleArray().Select(_ => (float)(random.NextDouble() - 0.5) * 0.2f).ToArray();
            using var source = tensor.Backend.FromBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()), DType.F32, tensor.Shape, tensor.DType);
            tensor.Backend.Copy(source, tensor);
        }
        if (fallback)
            foreach (var layer in model.Layers)
                foreach (var projection in new[] { layer.SelfAttention.QProj, layer.SelfAttention.KProj, layer.SelfAttention.VProj })
                    if (projection.Adapter is LoraLinear adapter) projection.Adapter = new WrappedAdapter(adapter);
        model.Training = training;
        var trainable = lora.TrainableParameters().ToList();
        events = ProfileRecorder.Record(() =>
        {
            using var scope = TensorScope.Begin();
            using var tape = GradientTape.Begin();
            var logits = model.Forward(model.CreateInputIds(Ids));
            var loss = model.CausalLanguageModelLoss(logits, Ids);
            tape.Backward(loss);
            results["logits"] = logits.ToSingleArray();
            results["loss"] = loss.ToSingleArray();
        });
        foreach (var parameter in trainable) results[parameter.Name!] = parameter.Grad!.ToSingleArray();
        // A second training forward draws new masks ("step 2 loss"): the counters must advance as three LoRA Linears' do.
        if (training)
            using (TensorScope.Begin())
                results["step 2 loss"] = model.CausalLanguageModelLoss(model.Forward(model.CreateInputIds(Ids)), Ids).ToSingleArray();
        return results;
    }

    /// <summary>A LoRA adapter behind another type: what ProjectQkv cannot fuse, so the layer takes three Linears.</summary>
    private sealed class WrappedAdapter(LoraLinear inner) : IModuleAdapter
    {
        public Tensor Forward(Tensor input, Tensor baseOutput, bool training) => inner.Forward(input, baseOutput, training);
    }
}
