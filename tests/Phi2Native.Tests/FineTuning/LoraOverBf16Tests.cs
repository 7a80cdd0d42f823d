using System.Text.Json;
using NUnit.Framework;
using Phi2Native.Autograd;
using Phi2Native.Autograd.Ops;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Projection;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Emulator;
using Phi2Native.FineTuning.Lora;
using Phi2Native.IO;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.FineTuning;

/// <summary>
/// LoRA over a bf16 base on the CUDA backend (emulated device): the differentiable cast, the fp32 branch beside the bf16
/// base against the CPU's all-fp32 model with the same adapter weights, and `phi2 finetune --dtype bf16` end to end.
/// </summary>
[TestFixture, Category("Emulated")]
public class LoraOverBf16Tests : TemporaryDirectoryTest
{
    private static readonly int[] Ids = [5, 17, 202, 3, 99, 0, 150, 42];

    [Test]
    public void ACastToTheSameDTypeRecordsNothingOnTheCpu()
    {
        var cpu = new CpuBackend();
        using var scope = TensorScope.Begin();
        var x = cpu.FromBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(new float[] { 1, -2, 3 }.AsSpan()), DType.F32, [3], DType.F32);
        x.RequiresGrad = true;
        using var tape = GradientTape.Begin();
        Assert.That(CastOp.Apply(x, DType.F32), Is.SameAs(x));
    }

    [Test]
    public void TheGradientOfACastIsTheCastOfTheGradient()
    {
        // loss = sum_i w_i * f32(bf16(x_i)) (a Linear onto one output): d loss / d x = bf16(w) widened back to F32 ... and
        // back through an F32 -> BF16 cast, the BF16 gradient narrowed. Both directions on the device.
        using var device = new EmulatedDevice();
        using var cuda = new CudaBackend(device, ownsDevice: false);
        float[] xs = [0.5f, -1.25f, 3.1f, 7.3f, -0.01f], ws = [1.1f, -2.3f, 0.37f, 4.9f, -0.77f];
        using var scope = TensorScope.Begin();
        var x = cuda.FromBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(xs.AsSpan()), DType.F32, [1, 5], DType.F32);
        x.RequiresGrad = true;
        var w = cuda.FromBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(ws.AsSpan()), DType.F32, [1, 5], DType.BF16);
        using var tape = GradientTape.Begin();
        var narrowed = CastOp.Apply(x, DType.BF16);
        Assert.That(narrowed.DType, Is.EqualTo(DType.BF16));
        var y = LinearOp.Apply(narrowed, w, null);                                       // [1, 1] bf16
        var loss = CastOp.Apply(y, DType.F32);
        Assert.That(loss.DType, Is.EqualTo(DType.F32));
        tape.Backward(loss);
        Assert.That(x.Grad!.DType, Is.EqualTo(DType.F32), "the gradient comes back in the input's dtype");
        Assert.That(x.Grad.ToSingleArray(), Is.EqualTo(w.ToSingleArray()), "d/dx of w . x is w, exactly (bf16 w widened)");
    }

    // dGeluEpilogue: fc2's dx product takes gelu_new's backward for fc1 (GeluGradientFusion, the LoRA fc2's branch dx
    // pending under it), or fc1's op runs bias_gelu_new_backward itself, as where a GPU's DGELU fails its probe.
    [TestCase(true)]
    [TestCase(false)]
    public void AnFp32AdapterOverABf16BaseMatchesTheCpuInF32ForwardAndGradients(bool dGeluEpilogue)
    {
        var config = new LoraConfig { R = 2, Alpha = 4, TargetModules = ["q_proj", "v_proj", "fc1", "fc2", "embed_tokens", "lm_head"] };
        var results = new Dictionary<string, float[]>();
        using var device = new EmulatedDevice();
        ((IDeviceApi)device).Blas.DGeluEpilogueIsGeluNew = dGeluEpilogue;
        using var cuda = new CudaBackend(device, ownsDevice: false);
        foreach (var (backend, dtype) in new (IBackend, DType)[] { (new CpuBackend(), DType.F32), (cuda, DType.BF16) })
        {
            string side = dtype == DType.F32 ? "cpu" : "cuda";
            using var model = Phi2Checkpoint.Load(Fixtures.ModelDirectory("bf16"), backend, dtype);
            using var lora = LoraModel.Create(model, config, seed: 7);
            Randomize(lora, 11);
            var trainable = lora.TrainableParameters().ToList();
            Assert.That(trainable.Select(p => p.DType), Is.All.EqualTo(DType.F32), "the adapters are fp32 over either base");
            using var scope = TensorScope.Begin();
            using var tape = GradientTape.Begin();
            var logits = model.Forward(model.CreateInputIds(Ids));
            Assert.That(logits.DType, Is.EqualTo(dtype), "the adapter's output is rounded to the base's dtype");
            var loss = model.CausalLanguageModelLoss(logits, Ids);
            tape.Backward(loss);
            results[$"{side} logits"] = logits.ToSingleArray();
            results[$"{side} loss"] = loss.ToSingleArray();
            foreach (var parameter in trainable)
            {
                Assert.That(parameter.Grad!.DType, Is.EqualTo(DType.F32), parameter.Name);
                results[$"{side} {parameter.Name}"] = parameter.Grad.ToSingleArray();
            }
        }
        Assert.That(results.Keys.Count(k => k.StartsWith("cpu ", StringComparison.Ordinal)), Is.EqualTo(2 + 2 * (3 * 4 + 2)), "logits, loss, and A and B of q_proj, v_proj, fc1, fc2 in 3 layers, embed_tokens and lm_head");
        foreach (var key in results.Keys.Where(k => k.StartsWith("cpu ", StringComparison.Ordinal)))
        {
            string name = key[4..];
            var tolerance = name is "logits" or "loss" ? Tolerance.Forward(DType.BF16) : Tolerance.Gradient(DType.BF16);
            TensorAssert.Close(name, results[key], results["cuda " + name], tolerance);
        }
    }

    [Test]
    public void FinetuningInBf16OnTheEmulatedDeviceTracksTheF32RunAndSavesAnF32Adapter()
    {
        string data = Path.Combine(Temp, "train.jsonl");
        File.WriteAllLines(data, ["{\"text\": \"In the beginning God created the heaven and the earth.\"}", "{\"text\": \"And the earth was without form, and void.\"}"]);
        var losses = new Dictionary<string, double[]>();
        foreach (var (device, dtype) in new[] { ("cpu", "f32"), ("emulated", "bf16") })
        {
            string run = Path.Combine(Temp, dtype);
            var (code, output, error) = Phi2("finetune", "--data", data, "--out", run, "--target", "q_proj,v_proj", "--max-steps", "2", "--batch-size", "1",
                "--max-length", "12", "--lr", Rate.ToString("R"), "--seed", "5", "--device", device, "--dtype", dtype, "--save-every", "1");
            Assert.That(code, Is.EqualTo(0), error);
            Assert.That(output, Does.Contain("done: 2 steps"));
            Assert.That(error, Does.Contain(device == "cpu" ? "cpu (" : "emulated, bf16"));
            losses[dtype] = File.ReadAllLines(Path.Combine(run, "metrics.jsonl")).Select(line => JsonDocument.Parse(line).RootElement)
                .Where(m => m.TryGetProperty("Loss", out _)).Select(m => m.GetProperty("Loss").GetDouble()).ToArray();
            using var adapter = SafeTensorsFile.Open(Path.Combine(run, "adapter_model.safetensors"));
            Assert.That(adapter.Tensors, Is.Not.Empty);
            Assert.That(adapter.Tensors.Select(t => t.DType), Is.All.EqualTo(DType.F32), $"{dtype}: PEFT adapter tensors are F32");
        }
        TestContext.Out.WriteLine($"losses f32 {string.Join(", ", losses["f32"])}; bf16 {string.Join(", ", losses["bf16"])}");
        Assert.That(losses["bf16"], Has.Length.EqualTo(2));
        for (int i = 0; i < 2; i++)
            Assert.That(losses["bf16"][i], Is.EqualTo(losses["f32"][i]).Within(1).Percent, $"step {i + 1} loss");

        AdaptersMovedAsTheCpusDid(Path.Combine(Temp, "f32"), Path.Combine(Temp, "bf16"));

        // The adapter trained over bf16 applies over a bf16 base in generation too.
        var generated = Phi2("generate", "--prompt", "And God said", "--adapter", Path.Combine(Temp, "bf16"), "--max-tokens", "3", "--device", "emulated", "--dtype", "bf16");
        Assert.That(generated.Code, Is.EqualTo(0), generated.Error);
        Assert.That(generated.Output, Is.Not.Empty);
    }

    private const double Rate = 3e-3;

    /// <summary>
    /// The losses alone cannot show that the optimizer stepped (one step at this rate moves the loss by 0.1%, inside the
    /// 1% bf16 tolerance): each adapter tensor's move in each step (step 1 from PEFT's init, B = 0; step 2 from the
    /// step-1 checkpoint) must be AdamW-sized, about the learning rate per element, and the bf16 run's moves must be the
    /// f32 CPU run's (same data, seeds and initial adapters) up to bf16 gradients.
    /// </summary>
    private static void AdaptersMovedAsTheCpusDid(string f32Run, string bf16Run)
    {
        float[] Read(string run, string checkpoint, string key)
        {
            string folder = checkpoint == "" ? run : Path.Combine(run, "checkpoints", checkpoint);
            using var file = SafeTensorsFile.Open(Path.Combine(folder, "adapter_model.safetensors"));
            return file.ReadAsSingle(key);
        }
        static double Norm(IEnumerable<double> values) => Math.Sqrt(values.Sum(v => v * v));
        string[] keys;
        using (var file = SafeTensorsFile.Open(Path.Combine(f32Run, "adapter_model.safetensors"))) keys = [.. file.Tensors.Select(t => t.Name)];
        Assert.That(keys, Has.Length.EqualTo(4 * 2 * 2), "A and B of q_proj and v_proj in 4 layers");
        foreach (string key in keys)
            foreach (var (from, to) in new[] { ("", "step-1"), ("step-1", "step-2") })
            {
                // B starts at zero, so step 1 moves only B (A's gradient is B-times-something: zero).
                if (from == "" && key.Contains("lora_A", StringComparison.Ordinal)) continue;
                double[] Move(string run)
                {
                    float[] after = Read(run, to, key), before = from == "" ? new float[after.Length] : Read(run, from, key);
                    return after.Select((v, i) => (double)v - before[i]).ToArray();
                }
                double[] cpu = Move(f32Run), bf16 = Move(bf16Run);
                double perElement = Norm(cpu) / Math.Sqrt(cpu.Length), size = Norm(bf16) / Norm(cpu);
                double cosine = cpu.Select((v, i) => v * bf16[i]).Sum() / (Norm(cpu) * Norm(bf16));
                TestContext.Out.WriteLine($"{key} {from}->{to}: {perElement / Rate:F3} x lr per element; bf16 {size:F3} x as far, cosine {cosine:F3}");
                Assert.That(perElement, Is.InRange(0.1 * Rate, 2 * Rate), $"{key}, {to}: an AdamW step moves each element by about the learning rate");
                // AdamW's early steps are nearly sign(gradient) x lr: an element whose gradient is near 0 may flip sign
                // under bf16 rounding, so the moves agree in size and direction, not element by element.
                Assert.That(size, Is.InRange(0.9, 1.1), $"{key}, {to}: the bf16 run moved as far as the CPU's");
                Assert.That(cosine, Is.GreaterThan(0.9), $"{key}, {to}: the bf16 run moved the way the CPU's did");
            }
    }

    [Test]
    public void MergingAnFp32AdapterIntoABf16BaseRoundsItsDeltaIntoTheWeights()
    {
        using var device = new EmulatedDevice();
        using var cuda = new CudaBackend(device, ownsDevice: false);
        using var model = Phi2Checkpoint.Load(Fixtures.ModelDirectory("bf16"), cuda, DType.BF16);
        var lora = LoraModel.Create(model, new LoraConfig { R = 2, Alpha = 4, TargetModules = ["q_proj", "fc1", "embed_tokens"] }, seed: 3);
        Randomize(lora, 4);
        float[] adapted;
        using (TensorScope.Begin()) adapted = model.Forward(model.CreateInputIds(Ids)).ToSingleArray();
        lora.Merge();
        Assert.That(model.Parameters().Select(p => p.DType), Is.All.EqualTo(DType.BF16), "the merged weights stay bf16");
        using (TensorScope.Begin())
            TensorAssert.Close("merged logits", adapted, model.Forward(model.CreateInputIds(Ids)).ToSingleArray(), Tolerance.Forward(DType.BF16));
    }

    /// <summary>PEFT starts B (or the embedding's A) at zero; the comparison needs adapters that change the output.</summary>
    private static void Randomize(LoraModel lora, int seed)
    {
        var random = new Random(seed);
        foreach (var tensor in lora.LinearAdapters.Select(a => a.B).Concat(lora.EmbeddingAdapters.Select(a => a.A)))
        {
            var values = tensor.ToSingleArray().Select(_ => (float)(random.NextDouble() - 0.5) * 0.2f).ToArray();
            using var source = tensor.Backend.FromBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()), DType.F32, tensor.Shape, tensor.DType);
            tensor.Backend.Copy(source, tensor);
        }
    }
}
