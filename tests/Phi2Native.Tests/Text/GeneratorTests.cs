using NUnit.Framework;
using Phi2Native.Embedded;
using Phi2Native.FineTuning;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;
using Phi2Native.Tests.Models;
using Phi2Native.Tests.Support;
using Phi2Native.Text;

namespace Phi2Native.Tests.Text;

/// <summary>Generation through the KV cache, on weights with sharp attention: greedy against full forwards, seeds, stops, streaming, cancellation, errors.</summary>
[TestFixture]
public class GeneratorTests
{
    private static readonly int[] Prompt = [3, 17, 5, 36, 0];

    // Sharp attention: with random weights every query attends almost uniformly, and a decode step at a wrong position
    // would still pick the same tokens (SharpAttentionDecodeTests).
    private static Phi2Model Model(Phi2Config? config = null) => SharpAttentionDecodeTests.SharpModel(GradientCheck.Backend, config ?? KeyValueCacheTests.Small);

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
        long start = model.Counters.TokensComputed;
        using var tokens = generator.Stream(Prompt, Greedy(6)).GetEnumerator();
        Assert.That(model.Counters.TokensComputed, Is.EqualTo(start), "nothing runs before the enumeration starts");
        Assert.That(tokens.MoveNext(), Is.True);
        Assert.That(model.Counters.TokensComputed - start, Is.EqualTo(Prompt.Length), "the prompt is prefilled once");
        for (int step = 1; step < 6; step++)
        {
            Assert.That(tokens.MoveNext(), Is.True);
            Assert.That(model.Counters.TokensComputed - start, Is.EqualTo(Prompt.Length + step), $"step {step} computes one position");
        }
        Assert.That(tokens.MoveNext(), Is.False);
        Assert.That(model.Counters.TokensComputed - start, Is.EqualTo(Prompt.Length + 5), "the last token is not fed back");
    }

    [Test]
    public void OnlyTheLastPositionGoesThroughLmHead()
    {
        using var model = Model();
        long before = model.Counters.LogitRowsComputed;
        var result = new Generator(model).Generate(Prompt, Greedy(6));
        Assert.That(result.Tokens, Has.Count.EqualTo(6));
        // One logits row for the prefill (not one per prompt position) and one per fed-back token.
        Assert.That(model.Counters.LogitRowsComputed - before, Is.EqualTo(6));
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
        // The model may pick padding ids (576 rows, 512 tokens): they decode to nothing.
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

    private static IReadOnlyList<int> Alone(Generator generator, int[] prompt, GenerationOptions options) => generator.Generate(prompt, options).Tokens;

    [Test]
    public void AGreedyBatchOfEqualLengthsIsOneBatchAndGivesWhatEachRowGivesAlone()
    {
        using var model = Model();
        var generator = new Generator(model);
        int[][] prompts = [Prompt, [8, 1, 33, 12, 7], [30, 29, 28, 27, 26]];
        var options = Greedy(7);
        long before = model.Counters.TokensComputed;
        var results = generator.GenerateBatch(prompts, options);
        // One prefill of 3 x 5 positions, then 6 steps of one position per row: not three runs one after another.
        Assert.That(model.Counters.TokensComputed - before, Is.EqualTo(3 * 5 + 3 * 6));
        for (int row = 0; row < prompts.Length; row++)
        {
            Assert.That(results[row].Tokens, Is.EqualTo(GreedyByFullForwards(model, prompts[row], 7)), $"row {row} against full forwards");
            Assert.That(results[row].Tokens, Is.EqualTo(Alone(generator, prompts[row], options)), $"row {row} against generating it alone");
            Assert.That(results[row].StopReason, Is.EqualTo(StopReason.MaxTokens));
        }
    }

    [Test]
    public void AGreedyBatchOfDifferentLengthsWithAStopInOneRowGivesWhatEachRowGivesAlone()
    {
        int[][] prompts = [[30, 29, 28, 27, 26, 25, 24, 23], Prompt, [8, 1]];
        const int Max = 8;
        List<int>[] free;
        using (var probe = Model())
            free = prompts.Select(p => GreedyByFullForwards(probe, p, Max)).ToArray();
        // The eos: a token row 1 reaches at step 1 or later that no other row generates, so only row 1 stops on it.
        int stopAt = Enumerable.Range(1, Max - 2).First(i => free[1].IndexOf(free[1][i]) == i && !free[0].Contains(free[1][i]) && !free[2].Contains(free[1][i]));
        using var model = Model(KeyValueCacheTests.Small with { EosTokenId = free[1][stopAt] });
        var generator = new Generator(model);
        var options = new GenerationOptions { MaxNewTokens = Max };
        var streamed = new List<BatchToken>();
        long before = model.Counters.TokensComputed;
        foreach (var token in generator.StreamBatch(prompts, options)) streamed.Add(token);
        // One prefill right-padded to 8 positions per row, then one position per row for each of the 7 later steps.
        Assert.That(model.Counters.TokensComputed - before, Is.EqualTo(3 * 8 + 3 * (Max - 1)));

        var results = generator.GenerateBatch(prompts, options);
        for (int row = 0; row < prompts.Length; row++)
        {
            var alone = generator.Generate(prompts[row], options);
            Assert.That(results[row].Tokens, Is.EqualTo(alone.Tokens), $"row {row}");
            Assert.That(results[row].StopReason, Is.EqualTo(alone.StopReason), $"row {row}");
            Assert.That(streamed.Where(t => t.Row == row).Select(t => t.Id), Is.EqualTo(alone.Tokens), $"row {row} streamed");
        }
        Assert.That(results[1].StopReason, Is.EqualTo(StopReason.EndOfText));
        Assert.That(results[1].Tokens, Is.EqualTo(free[1].Take(stopAt + 1)));
        Assert.That(results[0].Tokens, Is.EqualTo(free[0]));
        Assert.That(results[2].Tokens, Is.EqualTo(free[2]));
        // Streaming: rounds of one token per unfinished row, in row order; row 1 is silent after its eos while the others go on.
        int lastOfRow1 = streamed.FindLastIndex(t => t.Row == 1);
        Assert.That(lastOfRow1, Is.EqualTo(3 * stopAt + 1));
        int[] after = [2, .. Enumerable.Range(0, 2 * (Max - stopAt - 1)).Select(i => i % 2 == 0 ? 0 : 2)];   // row 2 ends that round
        Assert.That(streamed.Skip(lastOfRow1 + 1).Select(t => t.Row), Is.EqualTo(after));
    }

    [Test]
    public void EachRowOfABatchStopsWhenItsOwnContextIsFull()
    {
        using var model = Model();
        var generator = new Generator(model);
        int maxPositions = KeyValueCacheTests.Small.MaxPositionEmbeddings;
        int[][] prompts = [Enumerable.Range(0, maxPositions - 2).Select(i => i % 30).ToArray(), [4, 9, 16]];
        var results = generator.GenerateBatch(prompts, Greedy(6));
        Assert.That(results[0].StopReason, Is.EqualTo(StopReason.ContextFull));
        Assert.That(results[0].Tokens, Is.EqualTo(GreedyByFullForwards(model, prompts[0], 3)));
        Assert.That(results[1].StopReason, Is.EqualTo(StopReason.MaxTokens));
        Assert.That(results[1].Tokens, Is.EqualTo(GreedyByFullForwards(model, prompts[1], 6)));
    }

    [Test]
    public void ABatchStopsAtAStopStringInOneRowOnly()
    {
        using var model = EmbeddedDefault.CreateModel(GradientCheck.Backend);
        var tokenizer = EmbeddedDefault.Tokenizer();
        var generator = new Generator(model, tokenizer);
        int[][] prompts = [tokenizer.Encode("In the beginning God created"), tokenizer.Encode("And Moses said")];
        var free = prompts.Select(p => generator.Generate(p, Greedy(10)).Tokens).ToArray();
        string Text(int row, int count) => tokenizer.Decode(free[row].Take(count).Where(id => tokenizer.TokenText(id) != null));
        string stop = Text(0, 3);
        Assume.That(Text(0, 2).Length, Is.LessThan(stop.Length), "the third token of row 0 adds text");
        Assume.That(Text(1, 10), Does.Not.Contain(stop), "row 1 never produces row 0's stop string");
        var results = generator.GenerateBatch(prompts, Greedy(10) with { StopStrings = [stop] });
        Assert.That(results[0].StopReason, Is.EqualTo(StopReason.StopString));
        Assert.That(results[0].Tokens, Is.EqualTo(free[0].Take(3)));
        Assert.That(results[1].StopReason, Is.EqualTo(StopReason.MaxTokens));
        Assert.That(results[1].Tokens, Is.EqualTo(free[1]));
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
        long before = model.Counters.TokensComputed;
        var result = new Generator(model).Generate(Prompt, Greedy(0));
        Assert.That(result.Tokens, Is.Empty);
        Assert.That(model.Counters.TokensComputed, Is.EqualTo(before));
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
