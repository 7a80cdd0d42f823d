using NUnit.Framework;
using Phi2Native.Autograd;
using Phi2Native.Backends.Cpu;
using Phi2Native.FineTuning.Lora;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.FineTuning;

/// <summary>LoRA on the model: PEFT's selection rules, gradients, freezing, merge and removal.</summary>
[TestFixture]
public class LoraModelTests
{
    private static readonly Phi2Config Small = Phi2Config.Tiny with
    {
        VocabSize = 29, HiddenSize = 20, IntermediateSize = 28, NumHiddenLayers = 3, NumAttentionHeads = 2, RotaryDim = 6, ResidPdrop = 0,
    };

    private static readonly int[] Ids = [0, 5, 28, 5, 9, 13, 1];

    private static Phi2Model Model(DType dtype = DType.F32) => Phi2Model.CreateRandom(Small, GradientCheck.Backend, seed: 3, dtype);

    /// <summary>PEFT starts B (or the embedding's A) at zero; tests need adapters that change the output.</summary>
    private static void Randomize(LoraModel lora, int seed)
    {
        var random = new Random(seed);
        foreach (var tensor in lora.LinearAdapters.Select(a => a.B).Concat(lora.EmbeddingAdapters.Select(a => a.A)))
        {
            var values = tensor.ToSingleArray().Select(_ => (float)(random.NextDouble() - 0.5)).ToArray();
            using var source = tensor.Backend.FromBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()), DType.F32, tensor.Shape, tensor.DType);
            tensor.Backend.Copy(source, tensor);
        }
    }

    private static float[] Logits(Phi2Model model)
    {
        using var scope = TensorScope.Begin();
        return model.Forward(model.CreateInputIds(Ids)).ToSingleArray();
    }

    [TestCase("model.layers.0.self_attn.q_proj", true)]
    [TestCase("model.layers.1.self_attn.q_proj", false)]     // suffix match outside layers_to_transform
    [TestCase("model.layers.2.mlp.fc1", true)]              // "mlp.fc1" is a suffix entry
    [TestCase("model.embed_tokens", true)]                  // full name: taken regardless of layers
    [TestCase("lm_head", false)]
    [TestCase("model.layers.0.self_attn.dense", false)]
    public void TargetsFollowPeftRules(string moduleName, bool expected)
    {
        var config = new LoraConfig { TargetModules = ["q_proj", "mlp.fc1", "model.embed_tokens"], LayersToTransform = [0, 2] };
        Assert.That(ModuleSelection.IsTarget(config, moduleName), Is.EqualTo(expected));
    }

    [Test]
    public void RegexTargetMustMatchTheWholeName()
    {
        var config = new LoraConfig { TargetModulesRegex = @"model\.layers\.[01]\.self_attn\.(q|v)_proj" };
        Assert.That(ModuleSelection.IsTarget(config, "model.layers.1.self_attn.v_proj"), Is.True);
        Assert.That(ModuleSelection.IsTarget(config, "model.layers.2.self_attn.v_proj"), Is.False);
        Assert.That(ModuleSelection.IsTarget(config, "model.layers.1.self_attn.v_proj.extra"), Is.False);
    }

    [Test]
    public void GradientsOfEveryAdapterKindMatchFiniteDifferences()
    {
        using var model = Model(DType.F64);
        var config = new LoraConfig
        {
            R = 3, Alpha = 6, TargetModules = ["q_proj", "v_proj", "dense", "fc2", "model.embed_tokens"], LayersToTransform = [0, 2], ModulesToSave = ["lm_head"],
        };
        using var lora = LoraModel.Create(model, config, seed: 1);
        var trainable = lora.TrainableParameters().ToList();
        Assert.That(trainable.All(t => t.DType == DType.F64), Is.True, "adapters of an F64 model are F64");
        Randomize(lora, 2);
        Tensor Loss() => model.CausalLanguageModelLoss(model.Forward(model.CreateInputIds(Ids)), Ids);
        GradientCheck.Check("LoRA", Loss, trainable, samplesPerInput: 8);
        Assert.That(model.Layers[1].Parameters().Concat(model.FinalLayerNorm.Parameters()).All(p => p.Grad is null), Is.True, "frozen base weights get no gradient");
    }

    [Test]
    public void AFreshAdapterChangesNothingAndOnlyItsParametersTrain()
    {
        using var model = Model();
        var before = Logits(model);
        using var lora = LoraModel.Create(model, new LoraConfig { TargetModules = ["q_proj", "fc1"], R = 4 });
        Assert.That(Logits(model), Is.EqualTo(before), "B = 0 at initialization");
        Assert.That(lora.LinearAdapters, Has.Count.EqualTo(6));
        Assert.That(model.Parameters().Any(p => p.RequiresGrad), Is.False, "the base is frozen");
        Assert.That(lora.TrainableParameters().Select(LoraModel.PeftKey), Has.Member("base_model.model.model.layers.2.mlp.fc1.lora_B.weight"));
    }

    [Test]
    public void MergeGivesTheAdaptedOutputsAndDisposeRestoresTheBase()
    {
        using var model = Model();
        var baseLogits = Logits(model);
        var lora = LoraModel.Create(model, new LoraConfig
        {
            R = 2, Alpha = 5, TargetModules = ["k_proj", "fc2", "embed_tokens"], ModulesToSave = ["lm_head"],
        });
        Randomize(lora, 4);
        CpuBackend.Span<float>(model.LmHead.Bias!)[0] += 1f;   // a trained modules_to_save copy
        var adapted = Logits(model);
        Assert.That(adapted, Is.Not.EqualTo(baseLogits));
        lora.Dispose();
        Assert.That(Logits(model), Is.EqualTo(baseLogits), "removing the adapter restores the base model exactly");

        lora = LoraModel.Create(model, new LoraConfig
        {
            R = 2, Alpha = 5, TargetModules = ["k_proj", "fc2", "embed_tokens"], ModulesToSave = ["lm_head"],
        });
        Randomize(lora, 4);
        CpuBackend.Span<float>(model.LmHead.Bias!)[0] += 1f;
        lora.Merge();
        Assert.That(model.NamedModules().OfType<Phi2Native.Models.Modules.Linear>().All(l => l.Adapter is null), Is.True);
        TensorAssert.Close("merged logits", adapted, Logits(model), Tolerance.Forward(DType.F32));
    }

    [Test]
    public void BackwardStopsBelowTheLowestAdaptedLayer()
    {
        using var model = Model();
        using var lora = LoraModel.Create(model, new LoraConfig { TargetModules = ["v_proj"], LayersToTransform = [2] });
        using var scope = TensorScope.Begin();
        using var tape = GradientTape.Begin();
        tape.Backward(model.CausalLanguageModelLoss(model.Forward(model.CreateInputIds(Ids)), Ids));
        // Nothing below layer 2 is recorded: no op in layers 0 and 1 has a trainable input.
        Assert.That(tape.Ops.Any(op => op.Inputs.Any(i => i?.Name?.StartsWith("model.layers.0.", StringComparison.Ordinal) == true)), Is.False);
        Assert.That(lora.LinearAdapters.Single().A.Grad, Is.Not.Null);
    }

    [TestCase("o_proj", "names no module")]
    [TestCase("input_layernorm", "only Linear and Embedding")]
    [TestCase("mlp", "only Linear and Embedding")]
    public void BadTargetsListTheValidOnes(string target, string message)
    {
        using var model = Model();
        var e = Assert.Throws<Phi2Exception>(() => LoraModel.Create(model, new LoraConfig { TargetModules = [target] }));
        Assert.That(e!.Message, Does.Contain(message).And.Contain("q_proj, k_proj, v_proj, dense"));
    }

    [Test]
    public void BadRankLayerOrEmptySelectionAreErrors()
    {
        using var model = Model();
        Assert.That(Assert.Throws<Phi2Exception>(() => LoraModel.Create(model, new LoraConfig { R = 0, TargetModules = ["q_proj"] }))!.Message, Does.Contain("r must be a positive integer"));
        Assert.That(Assert.Throws<Phi2Exception>(() => LoraModel.Create(model, new LoraConfig { TargetModules = ["q_proj"], LayersToTransform = [3] }))!.Message,
            Does.Contain("layer 3").And.Contain("layers 0-2"));
        Assert.That(Assert.Throws<Phi2Exception>(() => LoraModel.Create(model, new LoraConfig { TargetModulesRegex = @"model\.layers\.9\..*" }))!.Message,
            Does.Contain("selects no module"));
    }

    [Test]
    public void RsLoraScalesByTheSquareRootOfTheRank()
    {
        Assert.That(new LoraConfig { R = 16, Alpha = 8, UseRsLora = true }.Scaling, Is.EqualTo(2.0));
        Assert.That(new LoraConfig { R = 16, Alpha = 8 }.Scaling, Is.EqualTo(0.5));
    }
}
