using NUnit.Framework;
using Phi2Native.Cli;

namespace Phi2Native.Tests.Cli;

/// <summary>The README's main job: it runs on the embedded model, says what that is, and reports every module's gradient.</summary>
[TestFixture]
public class DemoCommandTests
{
    [Test]
    public void DemoReportsLossAndAGradientNormForEveryModule()
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = Program.Run(["demo", "--batch-size", "2", "--length", "16"], output, error);
        Assert.That(code, Is.EqualTo(0), error.ToString());
        string text = output.ToString();
        Assert.That(text, Does.Contain("not Phi-2"));
        Assert.That(text, Does.Match(@"loss \d+\.\d{4}"));
        foreach (var module in new[] { "model.embed_tokens", "model.layers.3.self_attn.q_proj", "model.layers.0.mlp.fc2", "model.final_layernorm", "lm_head" })
            Assert.That(text, Does.Contain(module));
        Assert.That(text, Does.Not.Contain("0.000E+000"), "every module gets a non-zero gradient");
    }

    [Test]
    public void DemoRejectsALengthBeyondTheModel()
    {
        var error = new StringWriter();
        Assert.That(Program.Run(["demo", "--length", "100000"], new StringWriter(), error), Is.EqualTo(2));
        Assert.That(error.ToString(), Does.Contain("--length"));
    }
}
