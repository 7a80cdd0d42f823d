using NUnit.Framework;
using Phi2Native.Backends.Cpu;
using Phi2Native.Cli;
using Phi2Native.IO;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Cli;

/// <summary>`phi2 trace --adapter` and `phi2 merge` against PyTorch's PEFT semantics (golden/lora.safetensors).</summary>
[TestFixture]
public class AdapterCommandTests : TemporaryDirectoryTest
{

    [TestCase("lora")]
    [TestCase("rslora")]
    public void TraceWithAnAdapterWritesGradientsOfExactlyItsTensorsUnderPeftKeys(string variant)
    {
        using var golden = Fixtures.OpenGolden("lora");
        string outPath = Path.Combine(Temp, "trace.safetensors");
        var (code, _, error) = Phi2("trace", "--model", Fixtures.ModelDirectory("f32"), "--adapter", Fixtures.Path($"adapter-{variant}"),
            "--ids", string.Join(",", golden.ReadInt32("trace.input_ids")), "--out", outPath, "--grads");
        Assert.That(code, Is.EqualTo(0), error);
        using var trace = SafeTensorsFile.Open(outPath);
        var expected = golden.Tensors.Select(t => t.Name).Where(n => n.StartsWith($"{variant}.trace.", StringComparison.Ordinal)).Select(n => n[$"{variant}.trace.".Length..]);
        Assert.That(trace.Tensors.Select(t => t.Name), Is.EquivalentTo(expected));
        Assert.That(trace.Tensors.Select(t => t.Name), Has.Some.StartsWith("grad.base_model.model.model.layers."));
        foreach (var tensor in trace.Tensors)
        {
            var tolerance = tensor.Name.StartsWith("grad.", StringComparison.Ordinal) ? Tolerance.Gradient(DType.F32) : Tolerance.Forward(DType.F32);
            TensorAssert.Close(tensor.Name, golden.ReadAsSingle($"{variant}.trace.{tensor.Name}"), trace.ReadAsSingle(tensor.Name), tolerance, Fixtures.RegenerateHint);
        }
    }

    [Test]
    public void MergeWritesTheMergedWeightsInTheBaseDtypeAndCopiesTheOtherFiles()
    {
        string model = Path.Combine(Temp, "base");
        Directory.CreateDirectory(model);
        foreach (var file in Directory.GetFiles(Fixtures.ModelDirectory("f32"))) File.Copy(file, Path.Combine(model, Path.GetFileName(file)));
        File.WriteAllText(Path.Combine(model, "vocab.json"), "{}");
        string merged = Path.Combine(Temp, "merged");
        var (code, _, error) = Phi2("merge", "--model", model, "--adapter", Fixtures.Path("adapter-lora"), "--out", merged);
        Assert.That(code, Is.EqualTo(0), error);
        Assert.That(File.ReadAllText(Path.Combine(merged, "vocab.json")), Is.EqualTo("{}"));

        using var golden = Fixtures.OpenGolden("lora");
        using (var weights = SafeTensorsFile.Open(Path.Combine(merged, "model.safetensors")))
        {
            Assert.That(weights.Tensors.All(t => t.DTypeName == "F32"), Is.True, "the base's dtype by default");
            foreach (var name in golden.Tensors.Select(t => t.Name).Where(n => n.StartsWith("lora.merged.", StringComparison.Ordinal)))
                TensorAssert.Close(name, golden.ReadAsSingle(name), weights.ReadAsSingle(name["lora.merged.".Length..]), Tolerance.Forward(DType.F32));
        }
        // The merged checkpoint alone computes what base + adapter computed.
        using var reloaded = Phi2Checkpoint.Load(merged, CpuBackend.Default);
        int[] ids = golden.ReadInt32("trace.input_ids");
        using var scope = TensorScope.Begin();
        TensorAssert.Close("merged logits", golden.ReadAsSingle("lora.trace.logits"), reloaded.Forward(reloaded.CreateInputIds(ids)).ToSingleArray(), Tolerance.Forward(DType.F32));
    }

    [Test]
    public void MergeKeepsAnF16BaseInF16()
    {
        string merged = Path.Combine(Temp, "merged");
        var (code, _, error) = Phi2("merge", "--model", Fixtures.ModelDirectory("f16"), "--adapter", Fixtures.Path("adapter-lora"), "--out", merged);
        Assert.That(code, Is.EqualTo(0), error);
        using var weights = SafeTensorsFile.Open(Path.Combine(merged, "model.safetensors"));
        Assert.That(weights.Tensors.Select(t => t.DTypeName).Distinct(), Is.EqualTo(new[] { "F16" }));
    }

    [Test]
    public void MergeOfAPhiMsftBaseWritesAnHfCheckpointThatComputesTheSame()
    {
        string adapter = Path.Combine(Temp, "adapter"), merged = Path.Combine(Temp, "merged");
        float[] expected;
        int[] ids = [5, 7, 11, 13];
        using (var model = Phi2Checkpoint.Load(Fixtures.ModelDirectory("msft"), CpuBackend.Default))
        using (var lora = Phi2Native.FineTuning.Lora.LoraModel.Create(model, new() { R = 2, TargetModules = ["k_proj", "fc2"] }, seed: 3))
        {
            foreach (var b in lora.LinearAdapters.Select(a => a.B)) CpuBackend.Span<float>(b).Fill(0.05f);
            using (TensorScope.Begin()) expected = model.Forward(model.CreateInputIds(ids)).ToSingleArray();
            Phi2Native.FineTuning.Lora.PeftAdapter.Save(lora, adapter);
        }
        var (code, _, error) = Phi2("merge", "--model", Fixtures.ModelDirectory("msft"), "--adapter", adapter, "--out", merged);
        Assert.That(code, Is.EqualTo(0), error);
        var config = Phi2Config.Load(Path.Combine(merged, "config.json"));
        Assert.That(config.IsPhiMsft, Is.False, "written with HF keys");
        Assert.That(config.IntermediateSize, Is.EqualTo(240));
        using var reloaded = Phi2Checkpoint.Load(merged, CpuBackend.Default);
        using var scope = TensorScope.Begin();
        TensorAssert.Close("merged phi-msft logits", expected, reloaded.Forward(reloaded.CreateInputIds(ids)).ToSingleArray(), Tolerance.Forward(DType.F32));
    }

    [Test]
    public void MergeRefusesToOverwriteItsBase()
    {
        var (code, _, error) = Phi2("merge", "--model", Fixtures.ModelDirectory("f32"), "--adapter", Fixtures.Path("adapter-lora"), "--out", Fixtures.ModelDirectory("f32"));
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error, Does.Contain("--out must differ from --model"));
    }

    [Test]
    public void AnAdapterThatDoesNotFitIsExitCode2()
    {
        var (code, _, error) = Phi2("trace", "--model", Fixtures.ModelDirectory("msft"), "--adapter", Fixtures.Path("adapter-lora"),
            "--ids", "1,2", "--out", Path.Combine(Temp, "t.safetensors"));
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error, Does.Contain("does not fit this model").And.Contain("layers 0-1"));
    }
}
