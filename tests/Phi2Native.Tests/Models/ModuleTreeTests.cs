using NUnit.Framework;
using Phi2Native.FineTuning.Selection;
using Phi2Native.IO;
using Phi2Native.Models.Modules;
using Phi2Native.Models.Phi2;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Models;

/// <summary>The model describes itself once: its module tree carries HF's names, and what is read off it agrees with HF and PyTorch.</summary>
[TestFixture]
public class ModuleTreeTests
{
    /// <summary>
    /// HF's PhiForCausalLM.named_modules() for two layers, as transformers prints the model, less the modules that hold
    /// no parameter and contain none (rotary_emb, embed_dropout, each layer's resid_dropout and mlp.activation_fn).
    /// </summary>
    private static readonly string[] HfNamedModules =
    [
        "", "model", "model.embed_tokens", "model.layers",
        "model.layers.0", "model.layers.0.self_attn", "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj",
        "model.layers.0.self_attn.v_proj", "model.layers.0.self_attn.dense", "model.layers.0.mlp", "model.layers.0.mlp.fc1",
        "model.layers.0.mlp.fc2", "model.layers.0.input_layernorm",
        "model.layers.1", "model.layers.1.self_attn", "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.k_proj",
        "model.layers.1.self_attn.v_proj", "model.layers.1.self_attn.dense", "model.layers.1.mlp", "model.layers.1.mlp.fc1",
        "model.layers.1.mlp.fc2", "model.layers.1.input_layernorm",
        "model.final_layernorm", "lm_head",
    ];

    [Test]
    public void NamedModulesAreHfsModulesDepthFirst()
    {
        using var model = Phi2Model.CreateShapeOnly(Phi2Config.Tiny with { NumHiddenLayers = 2 });
        var names = model.NamedModules().Select(m => m.Name).ToList();
        Assert.That(names, Is.EquivalentTo(HfNamedModules));
        // Depth first: every module comes after its parent. The engine's order puts input_layernorm first in a layer (the
        // order it asks for weights in, which random initialization and adapters draw in); HF's puts it after mlp.
        for (int i = 1; i < names.Count; i++)
        {
            string parent = names[i].Contains('.') ? names[i][..names[i].LastIndexOf('.')] : "";
            Assert.That(names.IndexOf(parent), Is.LessThan(i), $"{names[i]} comes after {parent}");
        }
        Assert.That(model.NamedModules().Select(m => m.Name), Is.EqualTo(model.NamedModules().Select(m => m.Name)), "the same order every time");
    }

    [TestCase("f32")]
    [TestCase("sharded")]
    public void NamedParametersAreTheCheckpointsKeysWithTheirShapes(string variant)
    {
        // The fixture's weights were written by HF's save_pretrained from PyTorch's PhiForCausalLM: their keys are its named_parameters().
        string directory = Fixtures.ModelDirectory(variant);
        using var model = Phi2Checkpoint.Load(directory, GradientCheck.Backend);
        var expected = Directory.GetFiles(directory, "*.safetensors")
            .SelectMany(path => { using var file = SafeTensorsFile.Open(path); return file.Tensors.Select(t => (t.Name, Shape: t.Shape.Select(d => (int)d).ToArray())).ToList(); })
            .ToDictionary(t => t.Name, t => t.Shape);
        var named = model.NamedParameters().ToList();
        Assert.That(named.Select(p => p.Name), Is.EquivalentTo(expected.Keys));
        foreach (var (name, parameter) in named)
        {
            Assert.That(parameter.Name, Is.EqualTo(name));
            Assert.That(parameter.Shape.ToArray(), Is.EqualTo(expected[name]), name);
        }
        // Each parameter's module is the module of that name: the key less ".weight" / ".bias".
        var modules = model.NamedModules().ToDictionary(m => m.Name);
        foreach (var (name, parameter) in named)
            Assert.That(modules[name[..name.LastIndexOf('.')]].Parameters(recurse: false), Has.Member(parameter), name);
        Assert.That(Phi2Model.ParameterShapes(model.Config).Select(p => p.Name), Is.EqualTo(named.Select(p => p.Name)),
            "the shape-only tree lists the same parameters in the same order");
    }

    [Test]
    public void ASubtreeWalksOnlyItsOwnModules()
    {
        using var model = Phi2Model.CreateShapeOnly(Phi2Config.Tiny with { NumHiddenLayers = 2 });
        var layer = model.Layers[1];
        Assert.That(layer.NamedModules().Select(m => m.Name), Is.EqualTo(new[]
        {
            "model.layers.1", "model.layers.1.input_layernorm", "model.layers.1.self_attn", "model.layers.1.self_attn.q_proj",
            "model.layers.1.self_attn.k_proj", "model.layers.1.self_attn.v_proj", "model.layers.1.self_attn.dense",
            "model.layers.1.mlp", "model.layers.1.mlp.fc1", "model.layers.1.mlp.fc2",
        }));
        Assert.That(layer.Parameters(recurse: false), Is.Empty, "a layer holds no parameter itself");
        Assert.That(layer.Parameters().Count(), Is.EqualTo(2 * 7));
        Assert.That(layer.SelfAttention.QProj.Parameters(recurse: false).Select(p => p.Name), Is.EqualTo(new[]
        {
            "model.layers.1.self_attn.q_proj.weight", "model.layers.1.self_attn.q_proj.bias",
        }));
    }

    [Test]
    public void TrainingModeReachesEveryModule()
    {
        using var model = Phi2Model.CreateRandom(Phi2Config.Tiny with { NumHiddenLayers = 2 }, GradientCheck.Backend, seed: 1);
        model.Training = true;
        Assert.That(model.NamedModules().All(m => m.Training), Is.True);
        model.Layers[1].Training = false;
        Assert.That(model.NamedModules().Where(m => !m.Training).Select(m => m.Name), Is.EquivalentTo(model.Layers[1].NamedModules().Select(m => m.Name)));
        model.Training = false;
        Assert.That(model.NamedModules().Any(m => m.Training), Is.False);
    }

    [Test]
    public void EveryModuleWithParametersHasARoleAndEveryRoleAModule()
    {
        using var model = Phi2Model.CreateShapeOnly(Phi2Config.Tiny);
        var leaves = model.NamedModules().Where(m => m.Parameters(recurse: false).Any()).Select(m => m.Name[(m.Name.LastIndexOf('.') + 1)..]);
        Assert.That(ModuleRole.Described, Is.EquivalentTo(leaves.Distinct()));
    }
}
