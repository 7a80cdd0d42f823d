using NUnit.Framework;
using Phi2Native.Cli;
using Phi2Native.FineTuning;
using Phi2Native.FineTuning.Lora;
using Phi2Native.FineTuning.Selection;
using Phi2Native.Models.Phi2;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.FineTuning;

/// <summary>`phi2 layers` and the plan behind it: counts agree with a model built for real, and the table says what trains.</summary>
[TestFixture]
public class TrainingPlanTests
{
    [Test]
    public void Phi2HasItsKnownParameterCount() =>
        Assert.That(TrainingPlan.Create(Phi2Config.Phi2, null).TotalParameters, Is.EqualTo(2_779_683_840L));

    [TestCase("q_proj,v_proj", null, null)]
    [TestCase("attention,mlp,embed_tokens", null, "1")]
    [TestCase("fc1", "lm_head,input_layernorm", "0,2")]
    public void TrainableCountsEqualThoseOfARealLoraModel(string targets, string? full, string? layers)
    {
        var config = Phi2Config.Tiny with { NumHiddenLayers = 3 };
        var lora = TrainingSelection.Build(targets.Split(','), full?.Split(',') ?? [], layers is null ? null : TrainingSelection.ParseLayers(layers, 3), r: 4);
        var plan = TrainingPlan.Create(config, lora);
        using var model = Phi2Model.CreateRandom(config, GradientCheck.Backend, seed: 1);
        using var real = LoraModel.Create(model, lora);
        Assert.That(plan.TrainableParameters, Is.EqualTo(real.TrainableParameters().Sum(p => p.ElementCount)));
        Assert.That(plan.TotalParameters, Is.EqualTo(model.Parameters().Sum(p => p.ElementCount)));
        var trainedModules = real.LinearAdapters.Select(a => a.Module.Name).Concat(real.EmbeddingAdapters.Select(a => a.Module.Name)).Concat(real.ModulesToSave.Select(m => m.Name));
        Assert.That(plan.Rows.Where(r => r.Training != "frozen").Select(r => r.Name), Is.EquivalentTo(trainedModules));
    }

    [Test]
    public void MemoryCountsOnlyTheLayersThatBackwardReaches()
    {
        var config = Phi2Config.Phi2;
        var top = TrainingPlan.Create(config, TrainingSelection.Build(["q_proj", "v_proj"], [], TrainingSelection.ParseLayers("24-31", 32)));
        var all = TrainingPlan.Create(config, TrainingSelection.Build(["q_proj", "v_proj"], [], null));
        Assert.That(top.LowestTrainedLayer, Is.EqualTo(24));
        Assert.That(all.LowestTrainedLayer, Is.EqualTo(0));
        var topMemory = top.EstimateMemory(1, 512);
        var allMemory = all.EstimateMemory(1, 512);
        Assert.That(topMemory.Weights, Is.EqualTo(2_779_683_840L * 4));
        Assert.That(topMemory.Gradients, Is.EqualTo(top.TrainableParameters * 4));
        Assert.That(topMemory.OptimizerState, Is.EqualTo(2 * topMemory.Gradients));
        Assert.That(topMemory.Activations, Is.LessThan(allMemory.Activations / 3), "8 of 32 layers keep activations");
    }

    [Test]
    public void TheLayersCommandShowsRolesTrainingAndTheShare()
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = Program.Run(["layers", "--model", Fixtures.ModelDirectory("f32"), "--preset", "fluency", "--layers", "2"], output, error);
        Assert.That(code, Is.EqualTo(0), error.ToString());
        string text = output.ToString();
        Assert.That(text, Does.Contain("model.layers.2.mlp.fc1").And.Contain("LoRA r=8").And.Contain("frozen"));
        Assert.That(text, Does.Contain("step 1 in a factory").And.Contain("Generates final text output"));
        Assert.That(text, Does.Contain("one LayerNorm feeds both branches"));
        Assert.That(text, Does.Contain("trainable:").And.Contain("backward stops at layer 2"));
        Assert.That(Program.Run(["layers", "--preset", "poetry"], new StringWriter(), error), Is.EqualTo(2));
        Assert.That(error.ToString(), Does.Contain("valid presets"));
    }
}
