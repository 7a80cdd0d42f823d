using NUnit.Framework;
using Phi2Native.Backends.Cpu;
using Phi2Native.Embedded;
using Phi2Native.FineTuning;
using Phi2Native.FineTuning.Data;

namespace Phi2Native.Tests.Embedded;

/// <summary>
/// `phi2 demo`'s run, checked on its results (never on time): LoRA of a task preset on layers 2-3 of the pretrained
/// base, the rest frozen, fine-tuned on Exodus. The default run is the one the README and bench/RESULTS.md describe.
/// </summary>
[TestFixture]
public class EmbeddedLoraDemoTests
{
    private static readonly Lazy<LoraDemoResult> s_defaultRun = new(() => EmbeddedLoraDemo.Run(CpuBackend.Default, new LoraDemoSettings()));

    [Test]
    public void TrainableAndFrozenCountsAreTheConfigsArithmetic()
    {
        var result = s_defaultRun.Value;
        var c = EmbeddedDefault.Config;
        long hidden = c.HiddenSize, inner = c.IntermediateSize, vocab = c.VocabSize, r = 8;
        Assert.That((hidden, inner, vocab, c.NumHiddenLayers), Is.EqualTo((160L, 640L, 576L, 4)), "the arithmetic below is for this config");
        Assert.That(result.Preset.Name, Is.EqualTo("update-knowledge"));
        Assert.That(result.Layers, Is.EqualTo(new[] { 2, 3 }));

        // LoRA on q, k, v, dense (C -> C), fc1 (C -> I) and fc2 (I -> C) of 2 layers: r x (in + out) per module.
        long perLayer = 4 * r * (hidden + hidden) + r * (hidden + inner) + r * (inner + hidden);
        Assert.That(result.TrainableParameters, Is.EqualTo(2 * perLayer).And.EqualTo(46_080));

        // The whole base is frozen: embedding, per layer a LayerNorm and six biased Linears, final LayerNorm, biased lm_head.
        long layer = 2 * hidden + 4 * (hidden * hidden + hidden) + (hidden * inner + inner) + (inner * hidden + hidden);
        long frozen = vocab * hidden + 4 * layer + 2 * hidden + (hidden * vocab + vocab);
        Assert.That(result.FrozenParameters, Is.EqualTo(frozen).And.EqualTo(1_421_056));
        Assert.That(result.LowestTrainedLayer, Is.EqualTo(2));
    }

    [Test]
    public void TheAdapterLowersTheExodusLossByAtLeastTenPercent()
    {
        var result = s_defaultRun.Value;
        Assert.That(result.ExodusLossBefore, Is.GreaterThan(result.GenesisLossBefore), "Exodus is new to the base: it predicts Genesis better");
        // Written so that NaN fails: the ratio must lie inside [0, 0.9].
        Assert.That(result.ExodusLossAfter / result.ExodusLossBefore, Is.InRange(0.0, 0.9),
            $"Exodus {result.ExodusLossBefore:F4} -> {result.ExodusLossAfter:F4}");
        Assert.That(result.ExodusChange, Is.InRange(-1.0, -0.1));
        Assert.That(double.IsFinite(result.GenesisChange), Is.True, "the change on Genesis is reported");
        Assert.That(result.Steps, Is.EqualTo(new LoraDemoSettings().Training.Steps));
        Assert.That(result.Curve[0].Loss, Is.EqualTo(result.ExodusLossBefore).Within(1e-9), "the trainer's step-0 validation is the base's Exodus loss");
        Assert.That(result.Curve[^1].Loss, Is.EqualTo(result.ExodusLossAfter).Within(1e-9));
    }

    [Test]
    public void BackwardStopsBelowTheLowestTrainedLayer()
    {
        var backward = s_defaultRun.Value.Backward;
        Assert.That(backward.OpsBelowLowestTrainedLayer, Is.GreaterThan(0));
        Assert.That(backward.OpsRun + backward.OpsBelowLowestTrainedLayer, Is.LessThanOrEqualTo(backward.OpsRunTrainingEverything),
            "none of the ops below the lowest trained layer ran");
        Assert.That(backward.OpsSkipped, Is.GreaterThanOrEqualTo(backward.OpsBelowLowestTrainedLayer));
    }

    [Test]
    public void TheBaseAndTheAdaptedModelContinueThePromptDifferently()
    {
        var result = s_defaultRun.Value;
        Assert.That(result.BaseContinuation, Is.Not.Empty);
        Assert.That(result.AdaptedContinuation, Is.Not.Empty.And.Not.EqualTo(result.BaseContinuation));
    }

    [Test]
    public void EachLowerLayerSkipsOneMoreLayerOfBackwardOps()
    {
        var tokenizer = EmbeddedDefault.Tokenizer();
        var rows = EmbeddedBook.Exodus.PackedRows(tokenizer, 32).Training;
        var batch = new BatchLoader(rows, new DataOrder(rows.Count, 2, seed: 0, shuffle: false)).Next();
        BackwardWork Measure(string layers)
        {
            var plan = EmbeddedLoraDemo.Plan(new LoraDemoSettings { Layers = layers });
            return BackwardWork.Measure(() => EmbeddedDefault.CreateModel(CpuBackend.Default), plan.Selection, plan.LowestTrainedLayer, batch);
        }
        var top = Measure("3");
        var two = Measure("2-3");
        var all = Measure("0-3");
        int perLayer = top.OpsBelowLowestTrainedLayer - two.OpsBelowLowestTrainedLayer;
        // input_layernorm, the q/k/v projection (one op, and one each recording k and v), attention, its reshape, dense,
        // fc1 + gelu_new, fc2, the parallel residual: 10 since q, k and v became one op (it was 14).
        Assert.That(perLayer, Is.GreaterThanOrEqualTo(10), "a decoder layer is many ops");
        Assert.That(two.OpsBelowLowestTrainedLayer - all.OpsBelowLowestTrainedLayer, Is.EqualTo(2 * perLayer), "layers 0 and 1, each the same ops");
        Assert.That(all.OpsBelowLowestTrainedLayer, Is.InRange(1, perLayer - 1), "below layer 0: the embedding only");
    }

    [TestCase("domain", "2-3", "embed_tokens")]
    [TestCase("poetry", "2-3", "unknown preset")]
    [TestCase("update-knowledge", "4", "outside this model's layers 0-3")]
    public void APlanThatCannotShowTheMissionIsRefusedBeforeAnythingLoads(string preset, string layers, string message)
    {
        var e = Assert.Throws<Phi2Exception>(() => EmbeddedLoraDemo.Plan(new LoraDemoSettings { Preset = preset, Layers = layers }));
        Assert.That(e!.Message, Does.Contain(message));
    }

    [TestCase(double.NaN)]
    [TestCase(double.PositiveInfinity)]
    [TestCase(0.0)]
    public void ALearningRateThatIsNotAFinitePositiveNumberIsRefused(double rate)
    {
        var settings = new LoraDemoSettings();
        settings = settings with { Training = settings.Training with { LearningRate = rate } };
        Assert.That(Assert.Throws<Phi2Exception>(() => settings.Validate())!.Message, Does.Contain("--lr"));
    }
}
