using NUnit.Framework;
using Phi2Native.Autograd.Ops;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Ops.Dropout;
using Phi2Native.FineTuning;
using Phi2Native.FineTuning.Lora;
using Phi2Native.FineTuning.Optim;
using Phi2Native.FineTuning.Selection;
using Phi2Native.FineTuning.Training;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;
using Phi2Native.Text;

namespace Phi2Native.Tests.Options;

/// <summary>
/// Every floating value of the library's option and config types refuses NaN, +inf and -inf with a message that
/// names the value: a check written as "x &lt; 0" lets NaN through, so each of these fails where one is.
/// </summary>
[TestFixture]
public class NonFiniteLibraryOptionTests
{
    private static readonly double[] NonFinite = [double.NaN, double.PositiveInfinity, double.NegativeInfinity];

    private static IEnumerable<TestCaseData> AllNonFinite => NonFinite.Select(v => new TestCaseData(v).SetArgDisplayNames(v.ToString()));

    [TestCaseSource(nameof(AllNonFinite))]
    public void SamplingRefusesANonFiniteTemperatureOrTopP(double value)
    {
        Assert.That(() => new SamplingOptions { Temperature = value }.Validate(), Throws.InstanceOf<Phi2Exception>().With.Message.Contains("temperature must be a finite number >= 0"));
        Assert.That(() => new SamplingOptions { TopP = value }.Validate(), Throws.InstanceOf<Phi2Exception>().With.Message.Contains("top-p must be in (0, 1]"));
        Assert.That(() => new GenerationOptions { Sampling = new SamplingOptions { TopP = value } }.Validate(), Throws.InstanceOf<Phi2Exception>());
    }

    [TestCaseSource(nameof(AllNonFinite))]
    public void TrainingOptionsRefuseEveryNonFiniteValue(double value)
    {
        var cases = new (TrainingOptions Options, string Message)[]
        {
            (new() { LearningRate = value }, "--lr must be a finite number > 0"),
            (new() { WeightDecay = value }, "--weight-decay must be a finite number >= 0"),
            (new() { MaxGradientNorm = value }, "--max-grad-norm must be a finite number >= 0"),
            (new() { ResidualDropout = value }, "--resid-dropout must be in [0, 1)"),
        };
        foreach (var (options, message) in cases)
            Assert.That(options.Validate, Throws.InstanceOf<Phi2Exception>().With.Message.Contains(message).And.Message.Contains(value.ToString()), message);
    }

    [TestCaseSource(nameof(AllNonFinite))]
    public void LoraConfigRefusesANonFiniteAlphaOrDropout(double value)
    {
        var config = new LoraConfig { TargetModules = ["q_proj"] };
        Assert.That((config with { Alpha = value }).Validate, Throws.InstanceOf<Phi2Exception>().With.Message.Contains("lora_alpha must be a finite number"));
        Assert.That((config with { Dropout = value }).Validate, Throws.InstanceOf<Phi2Exception>().With.Message.Contains("lora_dropout must be in [0, 1)"));
        Assert.That(() => TrainingSelection.Build(["q_proj"], [], null, dropout: value), Throws.InstanceOf<Phi2Exception>().With.Message.Contains("lora_dropout"));
    }

    [TestCaseSource(nameof(AllNonFinite))]
    public void Phi2ConfigRefusesEveryNonFiniteValue(double value)
    {
        var cases = new (Phi2Config Config, string Field)[]
        {
            (Phi2Config.Tiny with { RopeTheta = value }, "rope_theta"),
            (Phi2Config.Tiny with { LayerNormEps = value }, "layer_norm_eps"),
            (Phi2Config.Tiny with { ResidPdrop = value }, "resid_pdrop"),
            (Phi2Config.Tiny with { EmbdPdrop = value }, "embd_pdrop"),
            (Phi2Config.Tiny with { AttentionDropout = value }, "attention_dropout"),
        };
        foreach (var (config, field) in cases)
            Assert.That(() => config.Validate("config.json"), Throws.InstanceOf<ModelConfigException>().With.Message.Contains($"config.json: {field} must be"), field);
    }

    [TestCase("1e999")]
    [TestCase("-1e999")]
    public void AConfigNumberTooLargeForADoubleIsNamed(string number)
    {
        string json = $$"""
            {"model_type": "phi", "vocab_size": 37, "hidden_size": 24, "intermediate_size": 40, "num_hidden_layers": 1,
             "num_attention_heads": 3, "max_position_embeddings": 32, "partial_rotary_factor": 0.5, "rope_theta": {{number}},
             "layer_norm_eps": 1e-5, "hidden_act": "gelu_new"}
            """;
        Assert.That(() => Phi2Config.Parse(json, "config.json"), Throws.InstanceOf<ModelConfigException>().With.Message.Contains("rope_theta must be a finite number"));
    }

    [TestCaseSource(nameof(AllNonFinite))]
    public void OptimizerAndClippingRefuseNonFiniteHyperParameters(double value)
    {
        using var scope = TensorScope.Begin();
        var parameter = CpuBackend.Default.Zeros([2], DType.F32);
        parameter.Name = "w";
        foreach (var options in new[] { new AdamWOptions { LearningRate = value }, new AdamWOptions { Epsilon = value }, new AdamWOptions { WeightDecay = value } })
            Assert.That(() => new AdamW([parameter], options), Throws.InstanceOf<ArgumentOutOfRangeException>(), options.ToString());
        var adamW = new AdamW([parameter], new AdamWOptions());
        Assert.That(() => adamW.LearningRate = value, Throws.InstanceOf<ArgumentOutOfRangeException>());
        Assert.That(() => GradientClipping.ClipGradientsByGlobalNorm([parameter], value), Throws.InstanceOf<ArgumentOutOfRangeException>());
    }

    [TestCaseSource(nameof(AllNonFinite))]
    public void DropoutRefusesANonFiniteProbability(double value)
    {
        using var scope = TensorScope.Begin();
        var x = CpuBackend.Default.Zeros([4], DType.F32);
        Assert.That(() => DropoutOp.Apply(x, value, seed: 1), Throws.InstanceOf<ArgumentOutOfRangeException>());
        using var model = Phi2Model.CreateRandom(Phi2Config.Tiny with { NumHiddenLayers = 1 }, CpuBackend.Default, seed: 1);
        Assert.That(() => model.ResidualDropoutOverride = value, Throws.InstanceOf<ArgumentOutOfRangeException>());
    }
}
