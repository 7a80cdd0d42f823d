using NUnit.Framework;
using Phi2Native.Autograd;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Emulator;
using Phi2Native.Embedded;
using Phi2Native.Models.Phi2;
using Phi2Native.Profiling;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Backends;

/// <summary>
/// The tiny Phi-2 fixture (tests/fixtures/tiny-*) on the CUDA backend over the emulated device: loading converts the
/// checkpoint's weights as the CPU backend does, and the forward logits, loss and every gradient match PyTorch's golden
/// data and the CPU backend, in evaluation and in training mode (dropout masks are the CPU's, bit for bit).
/// </summary>
[TestFixture, Category("Emulated")]
public class CudaBackendModelTests
{
    [TestCase("f32", DType.F32)]
    [TestCase("f16", DType.F32)]
    [TestCase("bf16", DType.BF16)]
    [TestCase("msft", DType.F32)]
    public void TheTinyCheckpointLoadsOntoTheDeviceAsOntoTheCpu(string variant, DType dtype)
    {
        using var device = new EmulatedDevice();
        using var cuda = new CudaBackend(device, ownsDevice: false);
        var cpu = new CpuBackend();
        using (var cpuModel = Phi2Checkpoint.Load(Fixtures.ModelDirectory(variant), cpu, dtype))
        using (var cudaModel = Phi2Checkpoint.Load(Fixtures.ModelDirectory(variant), cuda, dtype))
        {
            var expected = cpuModel.Parameters().ToList();
            var actual = cudaModel.Parameters().ToList();
            Assert.That(actual.Select(p => p.Name), Is.EqualTo(expected.Select(p => p.Name)));
            for (int i = 0; i < expected.Count; i++)
            {
                Assert.That(actual[i].Device.IsCudaBackend, Is.True, actual[i].Name);
                Assert.That(actual[i].DType, Is.EqualTo(dtype), actual[i].Name);
                Assert.That(actual[i].ToSingleArray(), Is.EqualTo(expected[i].ToSingleArray()), actual[i].Name);
            }
        }
        cuda.Dispose();
        Assert.That(device.Memory.LiveAllocations, Is.Zero, "disposing the model frees every parameter on the device");
    }

    [Test]
    public void TraceCaseMatchesPyTorchOnTheDevice() => CheckGolden("f32", "trace");

    [Test]
    public void BatchWithIgnoredLabelsMatchesPyTorchOnTheDevice() => CheckGolden("f32", "batch");

    // The MLP's other path (a GPU's until its GELU-epilogue probes pass): fc1 with cuBLASLt's BIAS epilogue, then the
    // vectorised gelu_new, and backward bias_gelu_new_backward where fc2's dx product otherwise took gelu_new's derivative
    // in its DGELU epilogue. The emulated device takes both epilogues otherwise.
    [Test]
    public void TraceCaseMatchesPyTorchOnTheDevice_WithoutTheGeluEpilogue() => CheckGolden("f32", "trace", geluEpilogue: false);

    [Test]
    public void InferenceLogitsAndLossMatchPyTorchOnTheDevice()
    {
        // No tape: the layers free their intermediates as they go, and only forward kernels run.
        using var golden = Fixtures.OpenGolden("f32");
        using var device = new EmulatedDevice();
        using var cuda = new CudaBackend(device, ownsDevice: false);
        using (var model = Phi2Checkpoint.Load(Fixtures.ModelDirectory("f32"), cuda))
        {
            int[] ids = golden.ReadInt32("trace.input_ids");
            using var scope = TensorScope.Begin();
            var logits = model.Forward(model.CreateInputIds(ids));
            var loss = model.CausalLanguageModelLoss(logits, ids);
            TensorAssert.Close("trace.logits", golden.ReadAsSingle("trace.logits"), logits.ToSingleArray(), Tolerance.Forward(DType.F32));
            TensorAssert.Close("trace.loss", golden.ReadAsSingle("trace.loss"), loss.ToSingleArray(), Tolerance.Forward(DType.F32));
        }
        cuda.Dispose();
        Assert.That(device.Memory.LiveAllocations, Is.Zero, "every tensor of the forward freed on the device");
    }

    [TestCase(true)]
    [TestCase(false)]
    public void BFloat16InferenceStaysCloseToTheCpuBackendInF32(bool geluEpilogue)
    {
        // The CUDA backend's bf16 numerics (README.md, "Where it computes"): bf16 weights and activations, fp32
        // statistics, softmax and loss. The CPU computes in fp32 from the very same bf16 weights, so what separates them
        // is the bf16 rounding of each activation.
        int[] ids = [5, 17, 202, 3, 99, 0, 150, 42, 8, 61];
        using var device = new EmulatedDevice();
        ((IDeviceApi)device).Blas.GeluEpilogueIsGeluNew = geluEpilogue; // false: fc1's BIAS epilogue, then gelu_new
        using var cuda = new CudaBackend(device, ownsDevice: false);
        using var cpuModel = Phi2Checkpoint.Load(Fixtures.ModelDirectory("bf16"), new CpuBackend(), DType.F32);
        using var cudaModel = Phi2Checkpoint.Load(Fixtures.ModelDirectory("bf16"), cuda, DType.BF16);
        using var scope = TensorScope.Begin();
        var logits = cudaModel.Forward(cudaModel.CreateInputIds(ids));
        Assert.That(logits.DType, Is.EqualTo(DType.BF16));
        var expected = cpuModel.Forward(cpuModel.CreateInputIds(ids));
        TensorAssert.Close("bf16 logits", expected.ToSingleArray(), logits.ToSingleArray(), Tolerance.Forward(DType.BF16));
        var loss = cudaModel.CausalLanguageModelLoss(logits, ids);
        Assert.That(loss.DType, Is.EqualTo(DType.F32), "the loss is fp32 whatever the logits are");
        Assert.That(loss.Item(), Is.EqualTo(cpuModel.CausalLanguageModelLoss(expected, ids).Item()).Within(1).Percent);
    }

    [Test]
    public void BFloat16AtHeadDimension80RunsTheTensorCoreAttentionAndStaysCloseToTheCpu()
    {
        // The embedded model has Phi-2's head dim 80, which takes attention_mma_bf16_d80 (the fixture's 30 takes the SIMT
        // kernel). The CPU computes in fp32 from the same bf16-rounded weights.
        int[] ids = [.. Enumerable.Range(0, 37).Select(i => (i * 37 + 11) % 500)];
        using var device = new EmulatedDevice();
        using var cuda = new CudaBackend(device, ownsDevice: false);
        var cpu = new CpuBackend();
        using var cudaModel = EmbeddedDefault.CreateModel(cuda, DType.BF16);
        using var cpuModel = EmbeddedDefault.CreateModel(cpu, DType.F32);
        foreach (var (_, parameter) in cpuModel.NamedParameters())
        {
            using var narrow = cpu.Cast(parameter, DType.BF16);
            using var back = cpu.Cast(narrow, DType.F32);
            cpu.Copy(back, parameter);
        }
        using var scope = TensorScope.Begin();
        Tensor logits;
        using (var recorder = ProfileRecorder.Start())
        {
            logits = cudaModel.Forward(cudaModel.CreateInputIds(ids));
            Assert.That(recorder.Events.Select(e => e.Name), Does.Contain("attention_mma_bf16_d80"), "the tensor-core forward ran");
        }
        var expected = cpuModel.Forward(cpuModel.CreateInputIds(ids));
        TensorAssert.Close("bf16 logits at D 80", expected.ToSingleArray(), logits.ToSingleArray(), Tolerance.Forward(DType.BF16));
    }

    [Test]
    public void BFloat16GradientsAtHeadDimension80RunTheTensorCoreAttentionBackwardAndStayCloseToTheCpu()
    {
        // The embedded model (head dim 80) in bf16: its backward takes attention_mma_backward_bf16_d80 (with the delta kernel).
        // The CPU computes in fp32 from the same bf16-rounded weights; each parameter's gradient is compared as a whole
        // (relative to its norm), since bf16 activations and gradients move single elements far more than the norm.
        int[] ids = [.. Enumerable.Range(0, 37).Select(i => (i * 37 + 11) % 500)];
        var gradients = new Dictionary<string, float[]>();
        using var device = new EmulatedDevice();
        using var cuda = new CudaBackend(device, ownsDevice: false);
        var cpu = new CpuBackend();
        foreach (var (backend, dtype) in new (IBackend, DType)[] { (cpu, DType.F32), (cuda, DType.BF16) })
        {
            string side = dtype == DType.F32 ? "cpu" : "cuda";
            using var model = EmbeddedDefault.CreateModel(backend, dtype);
            if (dtype == DType.F32)
                foreach (var (_, parameter) in model.NamedParameters())
                {
                    using var narrow = cpu.Cast(parameter, DType.BF16);
                    using var back = cpu.Cast(narrow, DType.F32);
                    cpu.Copy(back, parameter);
                }
            model.SetRequiresGrad(true);
            using var scope = TensorScope.Begin();
            using var tape = GradientTape.Begin();
            using (var recorder = ProfileRecorder.Start())
            {
                var logits = model.Forward(model.CreateInputIds(ids));
                tape.Backward(model.CausalLanguageModelLoss(logits, ids));
                if (dtype == DType.BF16)
                    Assert.That(recorder.Events.Select(e => e.Name), Does.Contain("attention_mma_backward_bf16_d80"), "the tensor-core backward ran");
            }
            foreach (var parameter in model.Parameters()) gradients[$"{side} {parameter.Name}"] = parameter.Grad!.ToSingleArray();
        }
        foreach (var key in gradients.Keys.Where(k => k.StartsWith("cpu ", StringComparison.Ordinal)))
        {
            float[] expected = gradients[key], actual = gradients["cuda " + key[4..]];
            double difference = Math.Sqrt(expected.Zip(actual, (e, a) => (double)(e - a) * (e - a)).Sum());
            double norm = Math.Sqrt(expected.Sum(e => (double)e * e));
            Assert.That(difference, Is.LessThanOrEqualTo(0.05 * norm + 1e-6), $"{key[4..]}: |cuda - cpu| against |cpu| = {norm}");
        }
    }

    [Test]
    public void BFloat16DecodingAtHeadDimension80RunsTheSplitKDecodeAndStaysCloseToTheCpu()
    {
        // The embedded model (head dim 80) in bf16 through a KV cache: two rows of different lengths (row 1 truncated
        // after the prefill, so the decode steps read per-row key times), the prefill of 21 positions through the cache
        // on the cached tensor-core forward, each decoded token on the split-K decode and its combine. The CPU computes
        // in fp32 from the same bf16-rounded weights.
        int[] prompt = [.. Enumerable.Range(0, 42).Select(i => (i * 53 + 7) % 500)];
        int[][] steps = [[42, 8], [0, 150], [77, 3]];
        var logits = new Dictionary<string, float[]>();
        var kernels = new List<string>();
        using var device = new EmulatedDevice();
        using var cuda = new CudaBackend(device, ownsDevice: false);
        var cpu = new CpuBackend();
        foreach (var backend in new IBackend[] { cpu, cuda })
        {
            string side = backend is CpuBackend ? "cpu" : "cuda";
            using var model = EmbeddedDefault.CreateModel(backend, backend is CpuBackend ? DType.F32 : DType.BF16);
            if (backend is CpuBackend)
                foreach (var (_, parameter) in model.NamedParameters())
                {
                    using var narrow = cpu.Cast(parameter, DType.BF16);
                    using var back = cpu.Cast(narrow, DType.F32);
                    cpu.Copy(back, parameter);
                }
            using var cache = new KeyValueCache(model, 2, 40);
            using var scope = TensorScope.Begin();
            using var recorder = backend is CudaBackend ? ProfileRecorder.Start() : null;
            logits[$"{side} prefill"] = model.ForwardLast(model.CreateInputIds(prompt, 2), cache).ToSingleArray();
            cache.Truncate(1, 9);
            for (int i = 0; i < steps.Length; i++)
                logits[$"{side} step {i}"] = model.ForwardLast(model.CreateInputIds(steps[i], 2), cache).ToSingleArray();
            if (recorder is not null) kernels.AddRange(recorder.Events.Select(e => e.Name));
        }
        Assert.That(kernels, Does.Contain("cached_attention_mma_bf16_d80"), "the prefill ran the cached tensor-core forward");
        Assert.That(kernels, Does.Contain("attention_decode_bf16_d80"), "the decode ran split-K");
        Assert.That(kernels, Has.None.EqualTo("cached_attention_bf16"), "no SIMT attention");
        foreach (var key in logits.Keys.Where(k => k.StartsWith("cpu ", StringComparison.Ordinal)))
            TensorAssert.Close("bf16 " + key[4..], logits[key], logits["cuda " + key[4..]], Tolerance.Forward(DType.BF16));
    }

    [Test]
    public void KeyValueCacheDecodingMatchesTheCpuBackend()
    {
        // Prefill 5 tokens through the cache, then decode 3 one at a time: the logits of every step, on both backends.
        int[] prompt = [7, 33, 120, 5, 199];
        int[] next = [42, 0, 150];
        var logits = new Dictionary<string, float[]>();
        using var device = new EmulatedDevice();
        using var cuda = new CudaBackend(device, ownsDevice: false);
        foreach (var backend in new IBackend[] { new CpuBackend(poisonNewMemory: true), cuda })
        {
            string side = backend is CpuBackend ? "cpu" : "cuda";
            using var model = Phi2Checkpoint.Load(Fixtures.ModelDirectory("f32"), backend);
            using var cache = new KeyValueCache(model, 1, 16);
            using var scope = TensorScope.Begin();
            logits[$"{side} prefill"] = model.Forward(model.CreateInputIds(prompt), cache).ToSingleArray();
            for (int i = 0; i < next.Length; i++)
                logits[$"{side} step {i}"] = model.Forward(model.CreateInputIds([next[i]]), cache).ToSingleArray();
        }
        foreach (var key in logits.Keys.Where(k => k.StartsWith("cpu ", StringComparison.Ordinal)))
            TensorAssert.Close(key[4..], logits[key], logits["cuda " + key[4..]], Tolerance.Forward(DType.F32));
    }

    [Test]
    public void BatchedDecodingOfRowsOfDifferentLengthsMatchesTheCpuBackend()
    {
        // Row 1 is prefilled right-padded to row 0's 6 tokens, then truncated to its 3: the decode steps then run the
        // per-row ops (SelectPositions, RotaryPerRow, CacheWritePerRow, CachedAttentionPerRow).
        int[] padded = [7, 33, 120, 5, 199, 14, 61, 2, 90, 36, 36, 36];
        int[][] steps = [[42, 8], [0, 150], [77, 3]];
        var logits = new Dictionary<string, float[]>();
        using var device = new EmulatedDevice();
        using var cuda = new CudaBackend(device, ownsDevice: false);
        foreach (var backend in new IBackend[] { new CpuBackend(poisonNewMemory: true), cuda })
        {
            string side = backend is CpuBackend ? "cpu" : "cuda";
            using var model = Phi2Checkpoint.Load(Fixtures.ModelDirectory("f32"), backend);
            using var cache = new KeyValueCache(model, 2, 16);
            using var scope = TensorScope.Begin();
            logits[$"{side} prefill"] = model.Forward(model.CreateInputIds(padded, 2), cache, [5, 2]).ToSingleArray();
            cache.Truncate(1, 3);
            for (int i = 0; i < steps.Length; i++)
                logits[$"{side} step {i}"] = model.ForwardLast(model.CreateInputIds(steps[i], 2), cache).ToSingleArray();
        }
        foreach (var key in logits.Keys.Where(k => k.StartsWith("cpu ", StringComparison.Ordinal)))
            TensorAssert.Close(key[4..], logits[key], logits["cuda " + key[4..]], Tolerance.Forward(DType.F32));
    }

    [Test]
    public void TrainingModeGradientsMatchTheCpuBackend()
    {
        // resid_pdrop is 0.1 in the fixture: training mode drops elements, with the same seeds on both backends.
        var results = new Dictionary<string, float[]>();
        using var device = new EmulatedDevice();
        using var cuda = new CudaBackend(device, ownsDevice: false);
        foreach (var backend in new IBackend[] { new CpuBackend(poisonNewMemory: true), cuda })
        {
            string side = backend is CpuBackend ? "cpu" : "cuda";
            using var model = Phi2Checkpoint.Load(Fixtures.ModelDirectory("f32"), backend);
            model.SetRequiresGrad(true);
            model.Training = true;
            int[] ids = [5, 17, 202, 3, 99, 0, 150, 42];
            using var scope = TensorScope.Begin();
            using var tape = GradientTape.Begin();
            var logits = model.Forward(model.CreateInputIds(ids, 2));
            var loss = model.CausalLanguageModelLoss(logits, ids);
            tape.Backward(loss);
            results[$"{side} logits"] = logits.ToSingleArray();
            results[$"{side} loss"] = loss.ToSingleArray();
            foreach (var parameter in model.Parameters()) results[$"{side} {parameter.Name}"] = parameter.Grad!.ToSingleArray();
        }
        foreach (var key in results.Keys.Where(k => k.StartsWith("cpu ", StringComparison.Ordinal)))
        {
            string name = key[4..];
            var tolerance = name is "logits" or "loss" ? Tolerance.Forward(DType.F32) : Tolerance.Gradient(DType.F32);
            TensorAssert.Close(name, results[key], results["cuda " + name], tolerance);
        }
    }

    private static void CheckGolden(string variant, string prefix, bool geluEpilogue = true)
    {
        using var golden = Fixtures.OpenGolden(variant);
        using var device = new EmulatedDevice();
        ((IDeviceApi)device).Blas.GeluEpilogueIsGeluNew = geluEpilogue;
        // Both GELU epilogues or neither: a device whose GELU is not gelu_new has no gelu_new derivative either.
        ((IDeviceApi)device).Blas.DGeluEpilogueIsGeluNew = geluEpilogue;
        using var cuda = new CudaBackend(device, ownsDevice: false);
        using (var model = Phi2Checkpoint.Load(Fixtures.ModelDirectory(variant), cuda, DType.F32))
        {
            model.SetRequiresGrad(true);
            int[] ids = golden.ReadInt32($"{prefix}.input_ids");
            var idShape = golden.Get($"{prefix}.input_ids").Shape;
            int batch = idShape.Length == 2 ? (int)idShape[0] : 1;
            int[] labels = golden.Contains($"{prefix}.labels") ? golden.ReadInt32($"{prefix}.labels") : ids;
            string hint = $"variant {variant} on {cuda.Device} ({device.Name})";

            using var scope = TensorScope.Begin();
            using var tape = GradientTape.Begin();
            var logits = model.Forward(model.CreateInputIds(ids, batch));
            var loss = model.CausalLanguageModelLoss(logits, labels);
            tape.Backward(loss);

            TensorAssert.Close($"{prefix}.logits", golden.ReadAsSingle($"{prefix}.logits"), logits.ToSingleArray(), Tolerance.Forward(DType.F32), hint);
            TensorAssert.Close($"{prefix}.loss", golden.ReadAsSingle($"{prefix}.loss"), loss.ToSingleArray(), Tolerance.Forward(DType.F32), hint);
            foreach (var parameter in model.Parameters())
            {
                Assert.That(parameter.Grad, Is.Not.Null, $"{parameter.Name} got no gradient");
                Assert.That(parameter.Grad!.Device, Is.EqualTo(cuda.Device), parameter.Name);
                TensorAssert.Close($"{prefix}.grad.{parameter.Name}", golden.ReadAsSingle($"{prefix}.grad.{parameter.Name}"),
                    parameter.Grad.ToSingleArray(), Tolerance.Gradient(DType.F32), hint);
            }
        }
        cuda.Dispose();
        Assert.That(device.Memory.LiveAllocations, Is.Zero, "every tensor of the model and the step freed on the device");
    }
}
