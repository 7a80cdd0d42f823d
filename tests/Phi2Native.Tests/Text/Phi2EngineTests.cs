using NUnit.Framework;
using Phi2Native.FineTuning;
using Phi2Native.Hosting;
using Phi2Native.Text;

namespace Phi2Native.Tests.Text;

/// <summary>The host API: load, (adapt,) generate as an async stream, with cancellation.</summary>
[TestFixture]
public class Phi2EngineTests
{
    [Test]
    public async Task StreamedTokensAreTheGeneratorsAndTheirTextAddsUp()
    {
        using var engine = Phi2Engine.Load();
        var options = new GenerationOptions { MaxNewTokens = 12 };
        var streamed = new List<GeneratedToken>();
        await foreach (var token in engine.GenerateAsync("And God said", options)) streamed.Add(token);

        var expected = new Generator(engine.Model, engine.Tokenizer).Generate("And God said", options).Tokens;
        Assert.That(streamed.Select(t => t.Id), Is.EqualTo(expected));
        var decoder = new IncrementalDecoder(engine.Tokenizer);
        string whole = string.Concat(expected.Select(decoder.Append));
        Assert.That(string.Concat(streamed.Select(t => t.Text)), Is.EqualTo(whole));
        Assert.That(await engine.CompleteAsync("And God said", options), Is.EqualTo(whole));
    }

    [Test]
    public void CancellationStopsTheStream()
    {
        using var engine = Phi2Engine.Load();
        using var cancel = new CancellationTokenSource();
        Assert.ThrowsAsync(Is.InstanceOf<OperationCanceledException>(), async () =>
        {
            await foreach (var _ in engine.GenerateAsync("In the beginning", new GenerationOptions { MaxNewTokens = 200 }, cancel.Token))
                cancel.Cancel();
        });
    }

    [Test]
    public void BadInputFailsBeforeAnythingRuns()
    {
        using var engine = Phi2Engine.Load();
        Assert.Throws<ModelInputException>(() => engine.GenerateAsync(new string('a', 2000)));
        Assert.Throws<Phi2Exception>(() => Phi2Engine.Load(adapterDirectory: "/no/such/adapter"));
    }
}
