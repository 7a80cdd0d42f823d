using System.Text.Json;
using NUnit.Framework;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Native;
using Phi2Native.IO;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Cli;

/// <summary>
/// --device and --dtype on the commands that compute: the emulated CUDA backend gives the CPU's tokens, logits and
/// losses; what cannot run (no GPU, bf16 on the CPU, bf16 with an adapter, fine-tuning in bf16) is one message and exit 2.
/// </summary>
[TestFixture]
public class DeviceOptionTests : TemporaryDirectoryTest
{
    private const string Prompt = "And God said";

    [Test, Category("Emulated")]
    public void GenerateOnTheEmulatedDeviceGivesTheCpusGreedyTokens()
    {
        string[] args = ["generate", "--prompt", Prompt, "--max-tokens", "6", "--print-ids"];
        var cpu = Phi2([.. args, "--device", "cpu"]);
        var emulated = Phi2([.. args, "--device", "emulated"]);
        Assert.That(cpu.Code, Is.EqualTo(0), cpu.Error);
        Assert.That(emulated.Code, Is.EqualTo(0), emulated.Error);
        Assert.That(emulated.Output.Trim().Split(','), Has.Length.EqualTo(6));
        Assert.That(emulated.Output, Is.EqualTo(cpu.Output));
        Assert.That(emulated.Error, Does.Contain("device: emulated, f32").And.Contain("slower"), "the device line says what the emulator is");
        Assert.That(emulated.Error, Does.Contain("tokens/s").And.Contain("; emulated, f32"));
    }

    [Test, Category("Emulated")]
    public void KernelSourcesFromTheVariable_AreSaidOnStandardError_AndAMissingFolderIsExitCode2()
    {
        string folder = Path.Combine(Temp, "kernels");
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "elementwise.cu"), KernelSourceCatalog.Embedded.SourceOf("elementwise.cu"));
        string? before = Environment.GetEnvironmentVariable(KernelSourceOptions.EnvironmentVariable);
        try
        {
            Environment.SetEnvironmentVariable(KernelSourceOptions.EnvironmentVariable, folder);
            var (code, output, error) = Phi2("generate", "--prompt", Prompt, "--max-tokens", "2", "--print-ids", "--device", "emulated");
            Assert.That(code, Is.EqualTo(0), error);
            Assert.That(output.Trim().Split(','), Has.Length.EqualTo(2));
            Assert.That(error, Does.Contain($"kernel sources from {folder} (PHI2NATIVE_KERNEL_SOURCES): elementwise.cu (as embedded)"));

            Environment.SetEnvironmentVariable(KernelSourceOptions.EnvironmentVariable, Path.Combine(Temp, "missing"));
            (code, _, error) = Phi2("generate", "--prompt", Prompt, "--max-tokens", "2", "--device", "emulated");
            Assert.That(code, Is.EqualTo(2));
            Assert.That(error, Does.Contain($"--device emulated: PHI2NATIVE_KERNEL_SOURCES={Path.Combine(Temp, "missing")}: no such folder"));
        }
        finally
        {
            Environment.SetEnvironmentVariable(KernelSourceOptions.EnvironmentVariable, before);
        }
    }

    [Test, Category("Emulated")]
    public void Bf16GenerationRunsOnTheEmulatedDevice()
    {
        var (code, output, error) = Phi2("generate", "--prompt", Prompt, "--max-tokens", "4", "--print-ids", "--device", "emulated", "--dtype", "bf16");
        Assert.That(code, Is.EqualTo(0), error);
        Assert.That(output.Trim().Split(',').Select(int.Parse).ToArray(), Has.Length.EqualTo(4));
        Assert.That(error, Does.Contain("device: emulated, bf16"));
    }

    [Test, Category("Emulated")]
    public void TraceOnTheEmulatedDeviceWritesTheCpusLogitsLossAndGradients()
    {
        var traces = new Dictionary<string, string>();
        foreach (var device in new[] { "cpu", "emulated" })
        {
            traces[device] = Path.Combine(Temp, $"{device}.safetensors");
            var (code, _, error) = Phi2("trace", "--text", "And God said, Let there be light", "--grads", "--out", traces[device], "--device", device);
            Assert.That(code, Is.EqualTo(0), error);
        }
        using SafeTensorsFile cpu = SafeTensorsFile.Open(traces["cpu"]), emulated = SafeTensorsFile.Open(traces["emulated"]);
        Assert.That(emulated.Tensors.Select(t => t.Name), Is.EquivalentTo(cpu.Tensors.Select(t => t.Name)));
        foreach (var tensor in cpu.Tensors)
        {
            Assert.That(emulated.Get(tensor.Name).DTypeName, Is.EqualTo("F32"), tensor.Name);
            var tolerance = tensor.Name.StartsWith("grad.", StringComparison.Ordinal) ? Tolerance.Gradient(DType.F32) : Tolerance.Forward(DType.F32);
            TensorAssert.Close(tensor.Name, cpu.ReadAsSingle(tensor.Name), emulated.ReadAsSingle(tensor.Name), tolerance);
        }
    }

    [Test, Category("Emulated")]
    public void Bf16TraceStaysWithinTheBf16ToleranceOfTheCpu()
    {
        string cpuPath = Path.Combine(Temp, "cpu.safetensors"), bf16Path = Path.Combine(Temp, "bf16.safetensors");
        string[] args = ["trace", "--text", "And God said, Let there be light"];
        Assert.That(Phi2([.. args, "--out", cpuPath]).Code, Is.EqualTo(0));
        var (code, _, error) = Phi2([.. args, "--out", bf16Path, "--device", "emulated", "--dtype", "bf16"]);
        Assert.That(code, Is.EqualTo(0), error);
        using SafeTensorsFile cpu = SafeTensorsFile.Open(cpuPath), bf16 = SafeTensorsFile.Open(bf16Path);
        Assert.That(bf16.Get("logits").DTypeName, Is.EqualTo("F32"), "the file holds F32 whatever the compute dtype");
        // bf16 weights (rounded from the same fp32 ones) and activations against the CPU's fp32 throughout.
        TensorAssert.Close("logits", cpu.ReadAsSingle("logits"), bf16.ReadAsSingle("logits"), Tolerance.Forward(DType.BF16));
        TensorAssert.Close("loss", cpu.ReadAsSingle("loss"), bf16.ReadAsSingle("loss"), Tolerance.Forward(DType.BF16));
    }

    [Test, Category("Emulated")]
    public void AShortFinetuneOnTheEmulatedDeviceHasTheCpusLosses()
    {
        // Small data and validation files keep the emulated run to seconds; resid and LoRA dropout are on, with the same seeds.
        string data = Path.Combine(Temp, "data.jsonl"), validation = Path.Combine(Temp, "val.jsonl");
        File.WriteAllLines(data, Enumerable.Range(0, 8).Select(i => $"{{\"text\": \"And God said unto Moses, go thou {i} times.\"}}"));
        File.WriteAllLines(validation, ["{\"text\": \"And Moses said unto the LORD, behold.\"}"]);
        var metrics = new Dictionary<string, List<JsonElement>>();
        foreach (var device in new[] { "cpu", "emulated" })
        {
            string run = Path.Combine(Temp, device);
            var (code, _, error) = Phi2("finetune", "--data", data, "--val", validation, "--out", run, "--max-steps", "2", "--batch-size", "2",
                "--max-length", "16", "--lr", "1e-2", "--target", "q_proj,v_proj,fc1", "--dropout", "0.1", "--seed", "5", "--device", device);
            Assert.That(code, Is.EqualTo(0), error);
            metrics[device] = File.ReadAllLines(Path.Combine(run, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement.Clone()).ToList();
        }
        static float[] Values(List<JsonElement> lines, string name) =>
            lines.Where(m => m.TryGetProperty(name, out _)).Select(m => (float)m.GetProperty(name).GetDouble()).ToArray();
        foreach (var name in new[] { "Loss", "validation_loss" })
        {
            float[] cpu = Values(metrics["cpu"], name), emulated = Values(metrics["emulated"], name);
            Assert.That(cpu, Has.Length.EqualTo(2), name);
            Assert.That(emulated, Has.Length.EqualTo(cpu.Length), name);
            TensorAssert.Close(name, cpu, emulated, Tolerance.Forward(DType.F32));
        }
        Assert.That(Values(metrics["cpu"], "Loss")[1], Is.Not.EqualTo(Values(metrics["cpu"], "Loss")[0]), "the first step changed the adapter");
    }

    [TestCase("generate")]
    [TestCase("trace")]
    [TestCase("finetune")]
    [TestCase("demo")]
    public void CudaWithoutAGpuIsExitCode2WithTheProbesReason(string command)
    {
        var probe = CudaAvailability.Probe();
        if (probe.IsAvailable) Assert.Ignore($"this machine has a GPU ({probe.Summary}): --device cuda opens it");
        var (code, output, error) = Phi2([command, .. Required(command), "--device", "cuda"]);
        Assert.That(code, Is.EqualTo(2), error);
        Assert.That(error, Does.Contain("--device cuda:0").And.Contain(probe.Reason!).And.Contain("--device emulated"));
        Assert.That(error, Does.Not.Contain("   at "), "no stack trace for a missing GPU");
        Assert.That(output, Does.Not.Contain("done"));
    }

    [TestCase("generate", "tpu")]
    [TestCase("trace", "tpu")]
    [TestCase("finetune", "cuda:")]
    [TestCase("demo", "cuda:-1")]
    public void ABadDeviceIsExitCode2NamingTheOptionAndTheChoices(string command, string device)
    {
        var (code, _, error) = Phi2([command, .. Required(command), "--device", device]);
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error, Does.Contain($"--device \"{device}\" is not one of cpu, cuda, cuda:N"));
        Assert.That(error, Does.Not.Contain("loading"), "refused before the model loads");
    }

    [TestCase("generate")]
    [TestCase("trace")]
    public void Bf16OnTheCpuIsRefusedBecauseTheCpuBackendComputesInF32Only(string command)
    {
        string outPath = Path.Combine(Temp, "t.safetensors");
        var (code, _, error) = Phi2([command, .. Required(command), "--dtype", "bf16"]);
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error, Does.Contain("--dtype bf16 on --device cpu").And.Contain("f32 only").And.Contain("CUDA backend"));
        Assert.That(File.Exists(outPath), Is.False);
        var bad = Phi2("generate", "--prompt", Prompt, "--dtype", "f16");
        Assert.That(bad.Code, Is.EqualTo(2));
        Assert.That(bad.Error, Does.Contain("--dtype \"f16\" is not one of f32, bf16"));
    }

    [Test]
    public void Bf16WithAnAdapterOnTheCpuIsRefusedBeforeAnythingLoads()
    {
        // The adapter need not exist: the combination is refused first. (On the CUDA backend an adapter runs over bf16.)
        var (code, _, error) = Phi2("generate", "--prompt", Prompt, "--adapter", Path.Combine(Temp, "adapter"), "--dtype", "bf16");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error, Does.Contain("--dtype bf16 on --device cpu").And.Contain("f32 only"));
        Assert.That(error, Does.Not.Contain("loading"));
    }

    [Test]
    public void FinetuningInBf16OnTheCpuIsRefusedWithTheReason()
    {
        var (code, _, error) = Phi2("finetune", "--out", Path.Combine(Temp, "run"), "--dtype", "bf16");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error, Does.Contain("--dtype bf16 on --device cpu").And.Contain("f32 only"));
        Assert.That(Directory.Exists(Path.Combine(Temp, "run")), Is.False, "nothing written");
    }

    [Test, Category("Emulated")]
    public void FinetuningAModuleInFullOverABf16BaseIsRefusedWithTheReason()
    {
        // LoRA adapters train in fp32 over the bf16 base; a module trained in full would need AdamW on bf16 weights.
        var (code, _, error) = Phi2("finetune", "--out", Path.Combine(Temp, "run"), "--device", "emulated", "--dtype", "bf16", "--full", "lm_head", "--max-steps", "1");
        Assert.That(code, Is.Not.Zero);
        Assert.That(error, Does.Contain("lm_head is trained in full").And.Contain("BF16").And.Contain("--target"));
    }

    [Test]
    public void TheHelpSaysTheEmulatedDeviceIsSlowAndForCheckingTheCudaPath()
    {
        var (_, output, _) = Phi2("generate", "--help");
        Assert.That(output, Does.Contain("--device").And.Contain("emulated").And.Contain("slower").And.Contain("without a GPU"));
        Assert.That(output, Does.Contain("--dtype"));
        Assert.That(Phi2("tokenize", "--help").Output, Does.Not.Contain("--device"), "tokenize computes nothing");
        Assert.That(Phi2("layers", "--help").Output, Does.Not.Contain("--device"), "layers reads config.json only");
    }

    // What each command needs besides --device to get as far as choosing its backend.
    private string[] Required(string command) => command switch
    {
        "generate" => ["--prompt", Prompt],
        "trace" => ["--ids", "1,2,3", "--out", Path.Combine(Temp, "t.safetensors")],
        "finetune" => ["--out", Path.Combine(Temp, "run"), "--max-steps", "1"],
        _ => ["--steps", "1"],
    };
}
