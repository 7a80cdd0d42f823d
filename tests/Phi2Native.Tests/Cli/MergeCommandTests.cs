using NUnit.Framework;
using Phi2Native.Backends.Cpu;
using Phi2Native.FineTuning.Lora;
using Phi2Native.IO;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Cli;

/// <summary>
/// `phi2 merge` into folders that already hold something (refused, or with --overwrite only the model files replaced),
/// adapters that hold NaN, and --dtype f16/bf16 storing the merged values (not the base's).
/// </summary>
[TestFixture]
public class MergeCommandTests : TemporaryDirectoryTest
{
    private const string ModelTensor = "model.layers.0.self_attn.q_proj.weight";

    private string OutHoldingAShardedModel()
    {
        string merged = Path.Combine(Temp, "merged");
        Directory.CreateDirectory(merged);
        foreach (var file in Directory.GetFiles(Fixtures.ModelDirectory("sharded"))) File.Copy(file, Path.Combine(merged, Path.GetFileName(file)));
        File.WriteAllText(Path.Combine(merged, "notes.txt"), "mine");
        Directory.CreateDirectory(Path.Combine(merged, "eval"));
        return merged;
    }

    [Test]
    public void AFolderThatHoldsAnotherModelIsRefusedWithoutOverwrite()
    {
        string merged = OutHoldingAShardedModel();
        var before = Directory.GetFileSystemEntries(merged).Order().ToArray();
        var (code, _, error) = Phi2("merge", "--model", Fixtures.ModelDirectory("f32"), "--adapter", Fixtures.Path("adapter-lora"), "--out", merged);
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error, Does.Contain($"--out '{merged}' is not empty").And.Contain("--overwrite"));
        Assert.That(error, Does.Not.Contain("loading"), "refused before the model loads");
        Assert.That(Directory.GetFileSystemEntries(merged).Order(), Is.EqualTo(before), "nothing changed");
    }

    [Test]
    public void OverwriteReplacesTheOldIndexAndShardsSoTheFolderLoadsTheMergedWeights()
    {
        string merged = OutHoldingAShardedModel();
        var (code, _, error) = Phi2("merge", "--model", Fixtures.ModelDirectory("f32"), "--adapter", Fixtures.Path("adapter-lora"), "--out", merged, "--overwrite");
        Assert.That(code, Is.EqualTo(0), error);
        Assert.That(Directory.GetFiles(merged).Select(Path.GetFileName).Order(), Is.EqualTo(new[] { "config.json", "model.safetensors", "notes.txt" }),
            "the old index and both shards are gone; the merge wrote its weights and config");
        Assert.That(File.ReadAllText(Path.Combine(merged, "notes.txt")), Is.EqualTo("mine"), "unrelated files stay");
        Assert.That(Directory.Exists(Path.Combine(merged, "eval")), Is.True, "and so do folders");
        using var golden = Fixtures.OpenGolden("lora");
        using var reloaded = Phi2Checkpoint.Load(merged, CpuBackend.Default);
        using var scope = TensorScope.Begin();
        TensorAssert.Close("merged logits", golden.ReadAsSingle("lora.trace.logits"),
            reloaded.Forward(reloaded.CreateInputIds(golden.ReadInt32("trace.input_ids"))).ToSingleArray(), Tolerance.Forward(DType.F32));
    }

    [Test]
    public void ModelFilesListsTheIndexFirstThenItsShardsAndNothingElse()
    {
        string merged = OutHoldingAShardedModel();
        File.WriteAllText(Path.Combine(merged, "model.safetensors.index.json"),
            """{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "../elsewhere.safetensors", "c": "model-00002-of-00002.safetensors"}}""");
        var files = Phi2CheckpointWriter.ModelFiles(merged).Select(Path.GetFileName).ToList();
        Assert.That(files, Is.EqualTo(new[] { "model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "config.json" }));
        File.WriteAllText(Path.Combine(merged, "model.safetensors.index.json"), "{not json");
        Assert.That(() => Phi2CheckpointWriter.ModelFiles(merged), Throws.InstanceOf<CheckpointException>().With.Message.Contains("cannot be told"));
    }

    [Test]
    public void AnOutThatIsAFileSaysSo()
    {
        string file = Path.Combine(Temp, "merged");
        File.WriteAllText(file, "x");
        var (code, _, error) = Phi2("merge", "--model", Fixtures.ModelDirectory("f32"), "--adapter", Fixtures.Path("adapter-lora"), "--out", file, "--overwrite");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error, Does.Contain($"--out '{file}' is a file; expected a folder"));
    }

    [Test]
    public void AnAdapterHoldingNaNIsRefusedNamingTheTensor()
    {
        string adapter = Path.Combine(Temp, "adapter"), merged = Path.Combine(Temp, "merged");
        Directory.CreateDirectory(adapter);
        File.Copy(Path.Combine(Fixtures.Path("adapter-lora"), "adapter_config.json"), Path.Combine(adapter, "adapter_config.json"));
        string broken = "";
        using (var source = SafeTensorsFile.Open(Path.Combine(Fixtures.Path("adapter-lora"), PeftAdapter.WeightsFileName)))
        {
            var writer = new SafeTensorsWriter();
            foreach (var tensor in source.Tensors)
            {
                float[] values = source.ReadAsSingle(tensor.Name);
                if (broken == "" && tensor.Name.Contains("lora_B", StringComparison.Ordinal))
                {
                    broken = tensor.Name;
                    values[1] = float.NaN;
                }
                writer.AddSingle(tensor.Name, values, tensor.Shape);
            }
            writer.Save(Path.Combine(adapter, PeftAdapter.WeightsFileName));
        }
        var (code, _, error) = Phi2("merge", "--model", Fixtures.ModelDirectory("f32"), "--adapter", adapter, "--out", merged);
        Assert.That(code, Is.EqualTo(2), error);
        Assert.That(error, Does.Contain($"cannot merge: {broken}").And.Contain("NaN at element 1").And.Contain(PeftAdapter.WeightsFileName));
        Assert.That(Directory.Exists(merged), Is.False, "nothing was written");
    }

    [TestCase("f16", "F16", 10)]
    [TestCase("bf16", "BF16", 7)]
    public void AnotherStoredDTypeHoldsTheMergedValuesRounded(string option, string stored, int mantissaBits)
    {
        string merged = Path.Combine(Temp, "merged");
        var (code, _, error) = Phi2("merge", "--model", Fixtures.ModelDirectory("f32"), "--adapter", Fixtures.Path("adapter-lora"), "--out", merged, "--dtype", option);
        Assert.That(code, Is.EqualTo(0), error);
        using var golden = Fixtures.OpenGolden("lora");
        using var weights = SafeTensorsFile.Open(Path.Combine(merged, "model.safetensors"));
        using var baseWeights = SafeTensorsFile.Open(Path.Combine(Fixtures.ModelDirectory("f32"), "model.safetensors"));
        Assert.That(weights.Tensors.Select(t => t.DTypeName).Distinct(), Is.EqualTo(new[] { stored }));
        Assert.That(File.ReadAllText(Path.Combine(merged, "config.json")), Does.Contain($"\"torch_dtype\": \"{(option == "f16" ? "float16" : "bfloat16")}\""));
        var names = golden.Tensors.Select(t => t.Name).Where(n => n.StartsWith("lora.merged.", StringComparison.Ordinal)).Select(n => n["lora.merged.".Length..]).ToList();
        Assert.That(names, Has.Member(ModelTensor));
        double ulp = Math.Pow(2, -mantissaBits);
        foreach (var name in names)
        {
            float[] expected = golden.ReadAsSingle("lora.merged." + name), actual = weights.ReadAsSingle(name), original = baseWeights.ReadAsSingle(name);
            // Rounding to nearest moves a value by at most half its ulp (plus f16's subnormal step near 0).
            double Bound(float value) => Math.Abs(value) * ulp + 1e-7;
            int far = 0;
            for (int i = 0; i < expected.Length; i++)
            {
                Assert.That(Math.Abs(actual[i] - expected[i]), Is.LessThanOrEqualTo(Bound(expected[i])), $"{name}[{i}]: the merged value, rounded");
                if (Math.Abs(expected[i] - original[i]) > 4 * Bound(expected[i])) far++;
            }
            // The adapter moves most elements by more than the rounding, so the unmerged base would fail the check above.
            Assert.That(far, Is.GreaterThan(expected.Length / 4), $"{name}: the merge changes it by more than {stored} rounding");
        }
    }
}
