using NUnit.Framework;
using Phi2Native.Autograd;
using Phi2Native.Backends.Cpu;
using Phi2Native.FineTuning.Lora;
using Phi2Native.IO;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.FineTuning;

/// <summary>PEFT adapter folders written by PEFT's layout (tests/fixtures/make_golden_lora.py) against PyTorch, and round trips.</summary>
[TestFixture]
public class PeftAdapterTests : TemporaryDirectoryTest
{

    private static Phi2Model Base() => Phi2Checkpoint.Load(Fixtures.ModelDirectory("f32"), new CpuBackend(poisonNewMemory: true));

    [TestCase("lora")]
    [TestCase("rslora")]
    public void AdapterLogitsLossAndGradientsMatchPyTorch(string variant)
    {
        using var golden = Fixtures.OpenGolden("lora");
        using var model = Base();
        using var lora = PeftAdapter.Load(model, Fixtures.Path($"adapter-{variant}"));
        int[] ids = golden.ReadInt32("trace.input_ids");
        using var scope = TensorScope.Begin();
        using var tape = GradientTape.Begin();
        var logits = model.Forward(model.CreateInputIds(ids));
        var loss = model.CausalLanguageModelLoss(logits, ids);
        tape.Backward(loss);
        string hint = Fixtures.RegenerateHint;
        TensorAssert.Close($"{variant}.trace.logits", golden.ReadAsSingle($"{variant}.trace.logits"), logits.ToSingleArray(), Tolerance.Forward(DType.F32), hint);
        TensorAssert.Close($"{variant}.trace.loss", golden.ReadAsSingle($"{variant}.trace.loss"), loss.ToSingleArray(), Tolerance.Forward(DType.F32), hint);
        var expectedKeys = golden.Tensors.Select(t => t.Name).Where(n => n.StartsWith($"{variant}.trace.grad.", StringComparison.Ordinal))
            .Select(n => n[$"{variant}.trace.grad.".Length..]);
        Assert.That(lora.TrainableParameters().Select(LoraModel.PeftKey), Is.EquivalentTo(expectedKeys));
        foreach (var parameter in lora.TrainableParameters())
        {
            string key = LoraModel.PeftKey(parameter);
            TensorAssert.Close($"grad.{key}", golden.ReadAsSingle($"{variant}.trace.grad.{key}"), parameter.Grad!.ToSingleArray(), Tolerance.Gradient(DType.F32), hint);
        }
        Assert.That(model.Parameters().Where(p => !lora.ModulesToSave.SelectMany(m => m.Parameters()).Contains(p)).All(p => p.Grad is null), Is.True,
            "frozen base weights get no gradient");
    }

    [TestCase("lora")]
    [TestCase("rslora")]
    public void MergedWeightsMatchPyTorch(string variant)
    {
        using var golden = Fixtures.OpenGolden("lora");
        using var model = Base();
        PeftAdapter.Load(model, Fixtures.Path($"adapter-{variant}")).Merge();
        var byName = model.Parameters().ToDictionary(p => p.Name!);
        var merged = golden.Tensors.Select(t => t.Name).Where(n => n.StartsWith($"{variant}.merged.", StringComparison.Ordinal)).ToList();
        Assert.That(merged, Is.Not.Empty);
        foreach (var name in merged)
        {
            string parameter = name[$"{variant}.merged.".Length..];
            TensorAssert.Close(name, golden.ReadAsSingle(name), byName[parameter].ToSingleArray(), Tolerance.Forward(DType.F32), Fixtures.RegenerateHint);
        }
    }

    [Test]
    public void SavedAdapterRoundTripsAndKeepsPeftKeysAndConfig()
    {
        using var model = Base();
        float[] expected;
        using (var lora = PeftAdapter.Load(model, Fixtures.Path("adapter-lora")))
        {
            using (TensorScope.Begin()) expected = model.Forward(model.CreateInputIds([1, 2, 3, 4])).ToSingleArray();
            PeftAdapter.Save(lora, Temp, "tiny-f32");
        }
        using (var original = SafeTensorsFile.Open(Fixtures.Path("adapter-lora/adapter_model.safetensors")))
        using (var saved = SafeTensorsFile.Open(Path.Combine(Temp, PeftAdapter.WeightsFileName)))
        {
            Assert.That(saved.Tensors.Select(t => t.Name), Is.EquivalentTo(original.Tensors.Select(t => t.Name)));
            foreach (var tensor in original.Tensors)
                Assert.That(saved.ReadAsSingle(tensor.Name), Is.EqualTo(original.ReadAsSingle(tensor.Name)), tensor.Name);
            Assert.That(saved.Tensors.All(t => t.DTypeName == "F32"), Is.True);
        }
        var savedConfig = PeftAdapterConfig.Read(Path.Combine(Temp, PeftAdapterConfig.FileName));
        var originalConfig = PeftAdapterConfig.Read(Fixtures.Path("adapter-lora/adapter_config.json"));
        Assert.That(savedConfig with { TargetModules = [], LayersToTransform = null, ModulesToSave = [] },
            Is.EqualTo(originalConfig with { TargetModules = [], LayersToTransform = null, ModulesToSave = [] }));
        Assert.That(savedConfig.TargetModules, Is.EqualTo(originalConfig.TargetModules));
        Assert.That(savedConfig.LayersToTransform, Is.EqualTo(originalConfig.LayersToTransform));
        Assert.That(savedConfig.ModulesToSave, Is.EqualTo(originalConfig.ModulesToSave));
        // PEFT's own writer produces the same JSON text (sorted keys, indent 2).
        Assert.That(File.ReadAllText(Path.Combine(Temp, PeftAdapterConfig.FileName)), Is.EqualTo(File.ReadAllText(Fixtures.Path("adapter-lora/adapter_config.json"))));
        using var reloaded = PeftAdapter.Load(model, Temp);
        using (TensorScope.Begin()) Assert.That(model.Forward(model.CreateInputIds([1, 2, 3, 4])).ToSingleArray(), Is.EqualTo(expected));
    }

    private string CopyAdapter(string variant)
    {
        string dir = Path.Combine(Temp, variant);
        Directory.CreateDirectory(dir);
        foreach (var file in Directory.GetFiles(Fixtures.Path($"adapter-{variant}"))) File.Copy(file, Path.Combine(dir, Path.GetFileName(file)));
        return dir;
    }

    [TestCase("\"use_dora\": false", "\"use_dora\": true", "use_dora")]
    [TestCase("\"rank_pattern\": {}", "\"rank_pattern\": {\"q_proj\": 2}", "rank_pattern")]
    [TestCase("\"alpha_pattern\": {}", "\"alpha_pattern\": {\"q_proj\": 2}", "alpha_pattern")]
    [TestCase("\"r\": 4", "\"r\": 0", "r must be a positive integer")]
    [TestCase("\"peft_type\": \"LORA\"", "\"peft_type\": \"IA3\"", "peft_type")]
    [TestCase("\"target_modules\": [", "\"target_modules\": [\"o_proj\", ", "o_proj")]
    public void UnsupportedOrBadSettingsAreErrors(string from, string to, string mentioned)
    {
        string dir = CopyAdapter("lora");
        string config = Path.Combine(dir, PeftAdapterConfig.FileName);
        File.WriteAllText(config, File.ReadAllText(config).Replace(from, to));
        using var model = Base();
        var e = Assert.Throws<Phi2Exception>(() => PeftAdapter.Load(model, dir));
        Assert.That(e!.Message, Does.Contain(mentioned));
        Assert.That(model.NamedModules().OfType<Phi2Native.Models.Modules.Linear>().All(l => l.Adapter is null), Is.True, "a failed load leaves the model as it was");
    }

    [Test]
    public void ShapesThatDoNotFitTheModelAreListed()
    {
        string dir = CopyAdapter("lora");
        string config = Path.Combine(dir, PeftAdapterConfig.FileName);
        File.WriteAllText(config, File.ReadAllText(config).Replace("\"r\": 4", "\"r\": 5"));
        using var model = Base();
        var e = Assert.Throws<Phi2Exception>(() => PeftAdapter.Load(model, dir));
        Assert.That(e!.Message, Does.Contain("mis-shaped: base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight: the model needs [5, 60], the file has [4, 60]"));
    }

    [Test]
    public void UnusedTensorsAreReportedNotDropped()
    {
        string dir = CopyAdapter("rslora");
        string weights = Path.Combine(dir, PeftAdapter.WeightsFileName);
        var writer = new SafeTensorsWriter();
        using (var file = SafeTensorsFile.Open(weights))
            foreach (var t in file.Tensors) writer.Add(t.Name, t.DType!.Value, t.Shape, file.GetBytes(t.Name));
        writer.AddSingle("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", new float[8 * 60], [8, 60]);
        writer.Save(weights);
        var warnings = new List<string>();
        using var model = Base();
        using var lora = PeftAdapter.Load(model, dir, warnings.Add);
        Assert.That(warnings, Has.One.Contains("q_proj.lora_A.weight"));
    }

    [Test]
    public void MissingFolderAndBinOnlyAdaptersAreNamed()
    {
        using var model = Base();
        Assert.That(Assert.Throws<Phi2Exception>(() => PeftAdapter.Load(model, Path.Combine(Temp, "none")))!.Message, Does.Contain("does not exist"));
        string dir = CopyAdapter("lora");
        File.Move(Path.Combine(dir, PeftAdapter.WeightsFileName), Path.Combine(dir, "adapter_model.bin"));
        Assert.That(Assert.Throws<Phi2Exception>(() => PeftAdapter.Load(model, dir))!.Message, Does.Contain("adapter_model.bin"));
    }
}
