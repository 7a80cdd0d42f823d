using NUnit.Framework;
using Phi2Native.Autograd;
using Phi2Native.FineTuning;
using Phi2Native.FineTuning.Lora;
using Phi2Native.FineTuning.Selection;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.FineTuning;

/// <summary>What a person asks to train becomes exactly what trains: presets, module names, layer ranges, full training.</summary>
[TestFixture]
public class TrainingSelectionTests
{
    private static readonly Phi2Config Small = Phi2Config.Tiny with
    {
        VocabSize = 29, HiddenSize = 20, IntermediateSize = 28, NumHiddenLayers = 4, NumAttentionHeads = 2, RotaryDim = 6, ResidPdrop = 0,
    };

    private static readonly int[] Ids = [3, 1, 4, 1, 5, 9, 2, 6];

    private static (HashSet<string> Trainable, int BackwardOps) Train(LoraConfig config)
    {
        using var model = Phi2Model.CreateRandom(Small, GradientCheck.Backend, seed: 2);
        using var lora = LoraModel.Create(model, config);
        using var scope = TensorScope.Begin();
        using var tape = GradientTape.Begin();
        tape.Backward(model.CausalLanguageModelLoss(model.Forward(model.CreateInputIds(Ids)), Ids));
        var withGradient = model.Parameters().Concat(lora.TrainableParameters()).Where(p => p.Grad != null).Select(LoraModel.PeftKey).ToHashSet();
        Assert.That(withGradient, Is.EquivalentTo(lora.TrainableParameters().Select(LoraModel.PeftKey)), "exactly the trainable tensors get gradients");
        return (withGradient, tape.BackwardOpsRun);
    }

    [Test]
    public void EveryPresetOfTheDocumentExistsWithItsModules()
    {
        Assert.That(TaskPreset.All.Select(p => p.Name), Is.EqualTo(new[]
        {
            "attention-refinement", "concept-learning", "new-knowledge", "update-knowledge", "fluency", "domain", "reasoning", "structured-output", "personas",
        }));
        Assert.That(TaskPreset.Get("fluency").Modules, Is.EquivalentTo(new[] { "dense", "fc1", "fc2", "lm_head" }));
        Assert.That(TaskPreset.Get("personas").Modules, Is.EquivalentTo(new[] { "q_proj", "k_proj", "v_proj", "dense", "lm_head" }));
        Assert.That(TaskPreset.Get("new-knowledge").TrainsEmbeddings, Is.True);
        var e = Assert.Throws<Phi2Exception>(() => TaskPreset.Get("poetry"));
        Assert.That(e!.Message, Does.Contain("attention-refinement").And.Contain("personas"));
    }

    [TestCaseSource(typeof(TaskPreset), nameof(TaskPreset.All))]
    public void EachPresetTrainsItsModulesAndNothingElse(TaskPreset preset)
    {
        var (trainable, _) = Train(TrainingSelection.Build(preset.Modules, [], null, r: 2));
        foreach (var module in preset.Modules)
            Assert.That(trainable.Any(k => k.Contains($".{module}.lora_", StringComparison.Ordinal)), Is.True, $"{preset.Name}: {module} trains");
        var others = new[] { "q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2", "embed_tokens", "lm_head" }.Except(preset.Modules);
        foreach (var module in others)
            Assert.That(trainable.Any(k => k.Contains($".{module}.", StringComparison.Ordinal)), Is.False, $"{preset.Name}: {module} stays frozen");
    }

    [Test]
    public void LayerRangeLimitsLoraButNotTheEmbeddingOrHead()
    {
        var config = TrainingSelection.Build(["attention", "embed_tokens", "lm_head"], [], TrainingSelection.ParseLayers("2-3", 4), r: 2);
        var (trainable, _) = Train(config);
        Assert.That(trainable.Where(k => k.Contains("layers.", StringComparison.Ordinal)).All(k => k.Contains("layers.2.") || k.Contains("layers.3.")), Is.True);
        Assert.That(trainable.Count(k => k.Contains(".self_attn.", StringComparison.Ordinal)), Is.EqualTo(2 * 4 * 2));
        Assert.That(trainable, Has.Member("base_model.model.model.embed_tokens.lora_embedding_A"));
        Assert.That(trainable, Has.Member("base_model.model.lm_head.lora_A.weight"));
    }

    [Test]
    public void TrainOnlyTheTopLayersInFullSkipsTheBackwardBelowThem()
    {
        var all = Train(TrainingSelection.Build([], ["attention", "mlp", "input_layernorm"], null));
        var top = Train(TrainingSelection.Build([], ["attention", "mlp", "input_layernorm"], TrainingSelection.ParseLayers("3", 4)));
        Assert.That(top.Trainable, Is.EquivalentTo(new[] { "input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.dense", "mlp.fc1", "mlp.fc2" }
            .SelectMany(m => new[] { $"base_model.model.model.layers.3.{m}.weight", $"base_model.model.model.layers.3.{m}.bias" })));
        // One layer of four trains: its backward plus the head's, about a quarter of the layers' work.
        Assert.That(top.BackwardOps, Is.LessThan(all.BackwardOps / 2));
    }

    [TestCase("0,2,5-7", 8, new[] { 0, 2, 5, 6, 7 })]
    [TestCase("24-31", 32, new[] { 24, 25, 26, 27, 28, 29, 30, 31 })]
    public void LayerListsParse(string text, int count, int[] expected) =>
        Assert.That(TrainingSelection.ParseLayers(text, count), Is.EqualTo(expected));

    [TestCase("4", "outside this model's layers 0-3")]
    [TestCase("2-x", "not a layer index or range")]
    [TestCase("3-1", "is reversed; write the lower layer first (1-3)")]
    public void BadLayersNameTheValidRange(string text, string message) =>
        Assert.That(Assert.Throws<Phi2Exception>(() => TrainingSelection.ParseLayers(text, 4))!.Message, Does.Contain(message));

    [Test]
    public void UnknownModulesListTheValidOnes()
    {
        var e = Assert.Throws<Phi2Exception>(() => TrainingSelection.Build(["o_proj"], [], null));
        Assert.That(e!.Message, Does.Contain("o_proj").And.Contain("q_proj").And.Contain("attention"));
        Assert.Throws<Phi2Exception>(() => TrainingSelection.Build(["input_layernorm"], [], null), "LayerNorms train in full only");
        Assert.That(TrainingSelection.Build([], ["input_layernorm"], null).ModulesToSave, Is.EqualTo(new[] { "input_layernorm" }));
    }

    [Test]
    public void TheWordsReadOffTheModuleTreeMeanWhatTheHandWrittenTableMeant()
    {
        // The table of words as it was written by hand before the words were read off the module tree.
        var handWritten = new Dictionary<string, string[]>
        {
            ["q_proj"] = ["q_proj"], ["k_proj"] = ["k_proj"], ["v_proj"] = ["v_proj"], ["dense"] = ["dense"],
            ["fc1"] = ["fc1"], ["fc2"] = ["fc2"], ["mlp.fc1"] = ["fc1"], ["mlp.fc2"] = ["fc2"],
            ["self_attn.q_proj"] = ["q_proj"], ["self_attn.k_proj"] = ["k_proj"], ["self_attn.v_proj"] = ["v_proj"], ["self_attn.dense"] = ["dense"],
            ["attention"] = ["q_proj", "k_proj", "v_proj", "dense"], ["self_attn"] = ["q_proj", "k_proj", "v_proj", "dense"],
            ["mlp"] = ["fc1", "fc2"],
            ["embed_tokens"] = ["model.embed_tokens"], ["model.embed_tokens"] = ["model.embed_tokens"],
            ["lm_head"] = ["lm_head"],
        };
        Assert.That(TrainingSelection.Aliases.Keys, Is.EquivalentTo(handWritten.Keys));
        foreach (var (word, meaning) in handWritten) Assert.That(TrainingSelection.Aliases[word], Is.EqualTo(meaning), word);
        // Full training also reaches the LayerNorms, and names each layer's modules in full when layers are given.
        Assert.That(TrainingSelection.Build([], ["final_layernorm"], null).ModulesToSave, Is.EqualTo(new[] { "model.final_layernorm" }));
        Assert.That(TrainingSelection.Build([], ["model.final_layernorm", "lm_head"], [1]).ModulesToSave, Is.EqualTo(new[] { "model.final_layernorm", "lm_head" }));
        var layered = TrainingSelection.Build(["q_proj", "fc1"], ["mlp", "input_layernorm"], [1, 3]);
        Assert.That(layered.ModulesToSave, Is.EqualTo(new[]
        {
            "model.layers.1.mlp.fc1", "model.layers.3.mlp.fc1", "model.layers.1.mlp.fc2", "model.layers.3.mlp.fc2",
            "model.layers.1.input_layernorm", "model.layers.3.input_layernorm",
        }));
        Assert.That(layered.TargetModules, Is.EqualTo(new[] { "q_proj" }), "a module trained in full gets no adapter");
    }
}
