using NUnit.Framework;
using Phi2Native.FineTuning;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;
using Phi2Native.Tests.Models;
using Phi2Native.Tests.Support;
using Phi2Native.Text;

namespace Phi2Native.Tests.Text;

/// <summary>Generation through the KV cache: greedy against full forwards, seeds, stops, streaming, cancellation, errors.</summary>
[TestFixture]
public class GeneratorTests
{
    private static readonly int[] Prompt = [3, 17, 5, 36, 0];

    private static Phi2Model Model(Phi2Config? config = null) => Phi2Model.CreateRandom(config ?? KeyValueCacheTests.Small, GradientCheck.Backend, seed: 5);

    private static GenerationOptions Greedy(int max) => new() { MaxNewTokens = max, StopAtEndOfText = false };

    /// <summary>Greedy decoding the slow way: a full forward over the whole sequence for every token.</summary>
    private static List<int> GreedyByFullForwards(Phi2Model model, int[] prompt, int count)
    {
        var sequence = prompt.ToList();
        for (int i = 0; i < count; i++)
        {
            using var scope = TensorScope.Begin();
            float[] logits = model.Forward(model.CreateInputIds(sequence.ToArray())).ToSingleArray();
            int vocab = model.Config.VocabSize;
            sequence.Add(Sampler.ArgMax(logits.AsSpan(logits.Length - vocab)));
        }
        return sequence.Skip(prompt.Length).ToList();
    }

    [Test]
    public void GreedyEqualsTheArgmaxOfRepeatedFullForwards()
    {
        using var model = Model();
        var result = new Generator(model).Generate(Prompt, Greedy(12));
        Assert.That(result.Tokens, Is.EqualTo(GreedyByFullForwards(model, Prompt, 12)));
        Assert.That(result.StopReason, Is.EqualTo(StopReason.MaxTokens));
    }

    [Test]
    public void EachStepComputesOnePosition()
    {
        using var model = Model();
        var generator = new Generator(model);
        long start = model.TokensComputed;
        using var tokens = generator.Stream(Prompt, Greedy(6)).GetEnumerator();
        Assert.That(model.TokensComputed, Is.EqualTo(start), "nothing runs before the enumeration starts");
        Assert.That(tokens.MoveNext(), Is.True);
        Assert.That(model.TokensComputed - start, Is.EqualTo(Prompt.Length), "the prompt is prefilled once");
        for (int step = 1; step < 6; step++)
        {
            Assert.That(tokens.MoveNext(), Is.True);
            Assert.That(model.TokensComputed - start, Is.EqualTo(Prompt.Length + step), $"step {step} computes one position");
        }
        Assert.That(tokens.MoveNext(), Is.False);
        Assert.That(model.TokensComputed - start, Is.EqualTo(Prompt.Length + 5), "the last token is not fed back");
    }

    [Test]
    public void OnlyTheLastPositionGoesThroughLmHead()
    {
        using var model = Model();
        long before = model.LogitRowsComputed;
        var result = new Generator(model).Generate(Prompt, Greedy(6));
        Assert.That(result.Tokens, Has.Count.EqualTo(6));
        // One logits row for the prefill (not one per prompt position) and one per fed-back token.
        Assert.That(model.LogitRowsComputed - before, Is.EqualTo(6));
    }

    [Test]
    public void SamplingRepeatsPerSeed()
    {
        using var model = Model();
        var generator = new Generator(model);
        IReadOnlyList<int> Run(ulong seed) => generator.Generate(Prompt, new GenerationOptions
        {
            MaxNewTokens = 16, StopAtEndOfText = false, Sampling = new SamplingOptions { Temperature = 1.5, TopK = 20, TopP = 0.95, Seed = seed },
        }).Tokens;
        Assert.That(Run(42), Is.EqualTo(Run(42)));
        Assert.That(Run(43), Is.Not.EqualTo(Run(42)));
    }

    [Test]
    public void StopsAtEndOfTextAndEmitsIt()
    {
        using var probe = Model();
        var greedy = new Generator(probe).Generate(Prompt, Greedy(8)).Tokens;
        // The same weights (they depend on names and shapes only) with eos set to the third greedy token.
        using var model = Model(KeyValueCacheTests.Small with { EosTokenId = greedy[2] });
        int firstEos = greedy.ToList().IndexOf(greedy[2]);
        var result = new Generator(model).Generate(Prompt, new GenerationOptions { MaxNewTokens = 8 });
        Assert.That(result.StopReason, Is.EqualTo(StopReason.EndOfText));
        Assert.That(result.Tokens, Is.EqualTo(greedy.Take(firstEos + 1)));
        var ignored = new Generator(model).Generate(Prompt, new GenerationOptions { MaxNewTokens = 8, StopAtEndOfText = false });
        Assert.That(ignored.Tokens, Is.EqualTo(greedy));
    }

    [Test]
    public void StopsAtAStopString()
    {
        using var model = EmbeddedDefault.CreateModel(GradientCheck.Backend);
        var tokenizer = EmbeddedDefault.Tokenizer();
        var generator = new Generator(model, tokenizer);
        int[] prompt = tokenizer.Encode("In the beginning God created");
        var free = generator.Generate(prompt, Greedy(10)).Tokens;
        // The untrained model may pick padding ids (576 rows, 512 tokens): they decode to nothing.
        string Text(int count) => tokenizer.Decode(free.Take(count).Where(id => tokenizer.TokenText(id) != null));
        string three = Text(3);
        Assume.That(Text(2).Length, Is.LessThan(three.Length), "the third token adds text");
        var result = generator.Generate(prompt, Greedy(10) with { StopStrings = ["\u0001never", three] });
        Assert.That(result.StopReason, Is.EqualTo(StopReason.StopString));
        Assert.That(result.Tokens, Is.EqualTo(free.Take(3)));
        // A text prompt goes through the same tokenizer.
        Assert.That(generator.Generate("In the beginning God created", Greedy(10)).Tokens, Is.EqualTo(free));
    }

    [Test]
    public void StopsWhenTheContextIsFull()
    {
        using var model = Model();
        int maxPositions = KeyValueCacheTests.Small.MaxPositionEmbeddings;
        int[] prompt = Enumerable.Range(0, maxPositions - 2).Select(i => i % 30).ToArray();
        var result = new Generator(model).Generate(prompt, Greedy(5));
        // Prefill 30 positions, then two more fill the 32: the third token is the last one with logits.
        Assert.That(result.Tokens, Has.Count.EqualTo(3));
        Assert.That(result.StopReason, Is.EqualTo(StopReason.ContextFull));
        Assert.That(result.Tokens, Is.EqualTo(GreedyByFullForwards(model, prompt, 3)));
    }

    [Test]
    public void ABatchOfDifferentLengthsGivesWhatEachRowGivesAlone()
    {
        using var model = Model();
        var generator = new Generator(model);
        int[][] prompts = [Prompt, [8, 1], [30, 29, 28, 27, 26, 25, 24, 23]];
        var options = new GenerationOptions { MaxNewTokens = 5, StopAtEndOfText = false, Sampling = new SamplingOptions { Seed = 100 } };
        var streamed = new List<(int Row, int Id)>();
        var results = generator.GenerateBatch(prompts, options, (row, id) => streamed.Add((row, id)));
        for (int row = 0; row < prompts.Length; row++)
        {
            var alone = generator.Generate(prompts[row], options with { Sampling = options.Sampling with { Seed = 100 + (ulong)row } });
            Assert.That(results[row].Tokens, Is.EqualTo(alone.Tokens), $"row {row}");
            Assert.That(streamed.Where(s => s.Row == row).Select(s => s.Id), Is.EqualTo(alone.Tokens));
        }
    }

    [Test]
    public void CancellationStopsBeforeTheNextForward()
    {
        using var model = Model();
        using var cancel = new CancellationTokenSource();
        var seen = new List<int>();
        Assert.Throws<OperationCanceledException>(() => new Generator(model).Generate(Prompt, Greedy(10), id =>
        {
            seen.Add(id);
            if (seen.Count == 2) cancel.Cancel();
        }, cancel.Token));
        Assert.That(seen, Has.Count.EqualTo(2));
    }

    [Test]
    public void ZeroTokensRunsNothing()
    {
        using var model = Model();
        long before = model.TokensComputed;
        var result = new Generator(model).Generate(Prompt, Greedy(0));
        Assert.That(result.Tokens, Is.Empty);
        Assert.That(model.TokensComputed, Is.EqualTo(before));
    }

    [Test]
    public void BadInputsAreClearErrors()
    {
        using var model = Model();
        var generator = new Generator(model);
        int tooLong = KeyValueCacheTests.Small.MaxPositionEmbeddings + 1;
        Assert.That(() => generator.Stream(new int[tooLong], Greedy(1)),
            Throws.InstanceOf<ModelInputException>().With.Message.Contains("max_position_embeddings"));
        Assert.That(() => generator.Stream([], Greedy(1)), Throws.InstanceOf<ModelInputException>());
        Assert.That(() => generator.Stream([1, KeyValueCacheTests.Small.VocabSize], Greedy(1)), Throws.InstanceOf<ModelInputException>());
        Assert.That(() => generator.Stream(Prompt, Greedy(1) with { Sampling = new SamplingOptions { Temperature = -1 } }),
            Throws.InstanceOf<Phi2Exception>().With.Message.Contains("temperature"));
        Assert.That(() => generator.Stream(Prompt, Greedy(1) with { Sampling = new SamplingOptions { TopP = 0 } }),
            Throws.InstanceOf<Phi2Exception>().With.Message.Contains("top-p"));
        Assert.That(() => generator.Stream(Prompt, Greedy(-1)), Throws.InstanceOf<Phi2Exception>().With.Message.Contains("max-tokens"));
        Assert.That(() => generator.Stream(Prompt, Greedy(1) with { StopStrings = ["x"] }),
            Throws.InstanceOf<Phi2Exception>().With.Message.Contains("tokenizer"));
        Assert.That(() => generator.Generate("text", Greedy(1)), Throws.InstanceOf<Phi2Exception>().With.Message.Contains("tokenizer"));
    }
}
