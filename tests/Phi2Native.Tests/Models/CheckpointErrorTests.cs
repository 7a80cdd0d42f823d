using NUnit.Framework;
using Phi2Native.Backends.Cpu;
using Phi2Native.IO;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Models;

/// <summary>Bad model folders, configs and inputs: each gives one exception of a named type that says what is wrong.</summary>
[TestFixture]
public class CheckpointErrorTests : TemporaryDirectoryTest
{

    private static string Config(string variant) => File.ReadAllText(Path.Combine(Fixtures.ModelDirectory(variant), "config.json"));

    private string ModelWith(string configJson, Action<SafeTensorsFile, SafeTensorsWriter>? rewrite = null)
    {
        string dir = Path.Combine(Temp, "model");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "config.json"), configJson);
        using var source = SafeTensorsFile.Open(Path.Combine(Fixtures.ModelDirectory("f32"), "model.safetensors"));
        var writer = new SafeTensorsWriter();
        if (rewrite is null)
            foreach (var t in source.Tensors) writer.Add(t.Name, t.DType!.Value, t.Shape, source.GetBytes(t.Name));
        else rewrite(source, writer);
        writer.Save(Path.Combine(dir, "model.safetensors"));
        return dir;
    }

    [Test]
    public void MissingFolderIsNamed()
    {
        string missing = Path.Combine(Temp, "nope");
        var e = Assert.Throws<CheckpointException>(() => Phi2Checkpoint.Load(missing, CpuBackend.Default));
        Assert.That(e!.Message, Does.Contain(missing));
    }

    [Test]
    public void FolderWithoutWeightsSaysWhatIsExpected()
    {
        File.WriteAllText(Path.Combine(Temp, "config.json"), Config("f32"));
        var e = Assert.Throws<CheckpointException>(() => Phi2Checkpoint.Load(Temp, CpuBackend.Default));
        Assert.That(e!.Message, Does.Contain("model.safetensors"));
    }

    [Test]
    public void HiddenSizeNotDivisibleByHeadsIsAConfigError()
    {
        string dir = ModelWith(Config("f32").Replace("\"num_attention_heads\": 2", "\"num_attention_heads\": 7").Replace("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 7"));
        var e = Assert.Throws<ModelConfigException>(() => Phi2Checkpoint.Load(dir, CpuBackend.Default));
        Assert.That(e!.Message, Does.Contain("hidden_size 60 is not divisible by num_attention_heads 7"));
        Assert.That(e.Message, Does.Contain("config.json"));
    }

    [TestCase("\"rope_theta\": 10000.0,", "rope_theta")]
    [TestCase("\"partial_rotary_factor\": 0.4,", "partial_rotary_factor")]
    [TestCase("\"layer_norm_eps\": 1e-05,", "layer_norm_eps")]
    public void MissingFieldIsNamed(string line, string field)
    {
        string dir = ModelWith(Config("f32").Replace(line, ""));
        var e = Assert.Throws<ModelConfigException>(() => Phi2Checkpoint.Load(dir, CpuBackend.Default));
        Assert.That(e!.Message, Does.Contain($"\"{field}\" is missing"));
    }

    [TestCase("\"hidden_act\": \"gelu_new\"", "\"hidden_act\": \"relu\"", "hidden_act")]
    [TestCase("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 1", "num_key_value_heads")]
    [TestCase("\"vocab_size\": 203", "\"vocab_size\": \"many\"", "vocab_size must be an integer")]
    [TestCase("\"partial_rotary_factor\": 0.4", "\"partial_rotary_factor\": 0.3", "rotary dim 9")]
    [TestCase("\"hidden_size\": 60,", "\"hidden_size\": 60", "not valid JSON")]
    public void UnsupportedOrInconsistentConfigIsNamed(string from, string to, string mentioned)
    {
        string dir = ModelWith(Config("f32").Replace(from, to));
        var e = Assert.Throws<ModelConfigException>(() => Phi2Checkpoint.Load(dir, CpuBackend.Default));
        Assert.That(e!.Message, Does.Contain(mentioned));
    }

    [Test]
    public void ConfigThatIsNotAnObjectIsNamed()
    {
        string dir = ModelWith("[1, 2]");
        var e = Assert.Throws<ModelConfigException>(() => Phi2Checkpoint.Load(dir, CpuBackend.Default));
        Assert.That(e!.Message, Does.Contain("config.json: expected a JSON object"));
    }

    [Test]
    public void BosAndEosOutsideATinyVocabularyAreAcceptedWithAWarning()
    {
        var warnings = new List<string>();
        using var model = Phi2Checkpoint.Load(Fixtures.ModelDirectory("f32"), CpuBackend.Default, warn: warnings.Add);
        Assert.That(warnings, Has.Some.Contains("bos_token_id 50256"));
        Assert.That(warnings, Has.Some.Contains("eos_token_id 50256"));
    }

    [Test]
    public void PhiMsftConfigReadsLegacyKeys()
    {
        var config = Phi2Config.Load(Path.Combine(Fixtures.ModelDirectory("msft"), "config.json"));
        Assert.That(config.IsPhiMsft, Is.True);
        Assert.That(config.IntermediateSize, Is.EqualTo(240), "n_inner null means 4 x n_embd");
        Assert.That(config.RotaryDim, Is.EqualTo(12));
        Assert.That(config.RopeTheta, Is.EqualTo(10000));
        Assert.That(config.BosTokenId, Is.Null);
    }

    [Test]
    public void MissingUnexpectedAndMisshapedTensorsAreAllListedInOneError()
    {
        string dir = ModelWith(Config("f32"), (source, writer) =>
        {
            foreach (var t in source.Tensors)
            {
                if (t.Name == "model.layers.1.mlp.fc2.bias") continue;                      // missing
                if (t.Name == "model.layers.0.self_attn.k_proj.weight")                      // mis-shaped
                {
                    writer.Add(t.Name, DType.F32, [60, 30], source.GetBytes(t.Name)[..(60 * 30 * 4)]);
                    continue;
                }
                writer.Add(t.Name, t.DType!.Value, t.Shape, source.GetBytes(t.Name));
            }
            writer.AddSingle("model.layers.0.self_attn.o_proj.weight", new float[4], [2, 2]);   // unexpected
            writer.AddSingle("model.layers.0.self_attn.rotary_emb.inv_freq", new float[6], [6]); // ignored, as HF does
        });
        var e = Assert.Throws<CheckpointException>(() => Phi2Checkpoint.Load(dir, CpuBackend.Default));
        Assert.That(e!.Message, Does.Contain("missing tensors (1)").And.Contain("model.layers.1.mlp.fc2.bias"));
        Assert.That(e.Message, Does.Contain("unexpected tensors (1)").And.Contain("o_proj"));
        Assert.That(e.Message, Does.Contain("mis-shaped tensors (1)").And.Contain("k_proj.weight: expected [60, 60], got [60, 30]"));
        Assert.That(e.Message, Does.Not.Contain("inv_freq"));
    }

    [Test]
    public void AConfigFarFromItsWeightsFailsFastWithACountAndAFewNames()
    {
        // 1000 layers over weights of 3: 997 x 14 tensors missing, and the message stays short.
        string dir = ModelWith(Config("f32").Replace("\"num_hidden_layers\": 3", "\"num_hidden_layers\": 1000"));
        var e = Assert.Throws<CheckpointException>(() => Phi2Checkpoint.Load(dir, CpuBackend.Default));
        Assert.That(e!.Message, Does.Contain($"missing tensors ({997 * 14})").And.Contain("model.layers.3.input_layernorm.weight"));
        Assert.That(e.Message, Does.Contain($"... and {997 * 14 - 10} more"));
        Assert.That(e.Message.Split('\n'), Has.Length.LessThan(15));
    }

    [TestCase("\"num_hidden_layers\": 3", "\"num_hidden_layers\": 2000000000", "num_hidden_layers 2000000000 is more than this engine supports (at most 1024)")]
    [TestCase("\"vocab_size\": 203", "\"vocab_size\": 2147483647", "vocab_size 2147483647 is more than this engine supports")]
    [TestCase("\"max_position_embeddings\": 64", "\"max_position_embeddings\": 100000000", "max_position_embeddings 100000000 is more than")]
    public void AbsurdSizesAreRefusedBeforeAnyNameIsBuilt(string from, string to, string message)
    {
        string dir = ModelWith(Config("f32").Replace(from, to));
        // Run aside, so a regression that builds billions of names fails here instead of hanging the suite.
        var load = Task.Run(() => Phi2Checkpoint.Load(dir, CpuBackend.Default).Dispose());
        Assert.That(Task.WhenAny(load, Task.Delay(TimeSpan.FromSeconds(30))).Result, Is.SameAs(load), "the load fails fast");
        Assert.That(load.Exception!.InnerException, Is.InstanceOf<ModelConfigException>().With.Message.Contains(message));
        Assert.That(load.Exception.InnerException!.Message, Does.Contain("config.json"));
    }

    [Test]
    public void AWeightMatrixBeyondWhatATensorAddressesIsRefused()
    {
        var config = Phi2Config.Tiny with { VocabSize = 40000, HiddenSize = 65536, NumAttentionHeads = 512, RotaryDim = 64 };
        Assert.That(() => config.Validate("config.json"), Throws.InstanceOf<ModelConfigException>()
            .With.Message.Contains("vocab_size x hidden_size = 2621440000 elements in one weight matrix is more than this engine supports"));
    }

    [Test]
    public void ShardMissingFromTheIndexIsNamed()
    {
        string dir = Path.Combine(Temp, "sharded");
        Directory.CreateDirectory(dir);
        foreach (var file in Directory.GetFiles(Fixtures.ModelDirectory("sharded")))
            File.Copy(file, Path.Combine(dir, Path.GetFileName(file)));
        File.Delete(Path.Combine(dir, "model-00002-of-00002.safetensors"));
        var e = Assert.Throws<CheckpointException>(() => Phi2Checkpoint.Load(dir, CpuBackend.Default));
        Assert.That(e!.Message, Does.Contain("model-00002-of-00002.safetensors"));
    }

    [Test]
    public void TruncatedWeightsNameTheFile()
    {
        string dir = ModelWith(Config("f32"));
        string weights = Path.Combine(dir, "model.safetensors");
        var bytes = File.ReadAllBytes(weights);
        File.WriteAllBytes(weights, bytes[..(bytes.Length - 100)]);
        var e = Assert.Throws<SafeTensorsFormatException>(() => Phi2Checkpoint.Load(dir, CpuBackend.Default));
        Assert.That(e!.Message, Does.Contain(weights));
    }

    [Test]
    public void InputIdOutsideTheVocabularyIsNamedWithItsPosition()
    {
        using var model = Phi2Checkpoint.Load(Fixtures.ModelDirectory("f32"), CpuBackend.Default);
        var e = Assert.Throws<ModelInputException>(() => model.CreateInputIds([1, 2, 203]));
        Assert.That(e!.Message, Does.Contain("token id 203 at position 2").And.Contain("[0, 203)"));
        Assert.Throws<ModelInputException>(() => model.CreateInputIds([-1, 2]));
        Assert.Throws<ModelInputException>(() => model.CreateInputIds(new int[65]), "longer than max_position_embeddings");
    }
}
