using NUnit.Framework;
using Phi2Native.Backends.Cuda;
using Phi2Native.Hosting;
using Phi2Native.Models.Modules;
using Phi2Native.Models.Phi2;
using Phi2Native.Profiling;
using Phi2Native.Tensors;
using Phi2Native.Text;

namespace Phi2Native.Tests.Text;

/// <summary>
/// Decoding with the step captured as a CUDA graph (DecodeGraph) on the emulated device gives token for token what the
/// eager path gives (every step's kernels one by one, <see cref="GenerationOptions.CudaGraphs"/> false), in fp32 and
/// bf16, greedy and sampled, for a batch of rows at different lengths that stop at different times (max tokens, the
/// context filled), across a reused cache and a re-capture after an adapter changes; and a token after the capture is
/// one graph launch.
/// </summary>
[TestFixture, Category("Emulated")]
public class DecodeGraphTests
{
    private static Phi2Engine Emulated(DType dtype) => Phi2Engine.Load(new Phi2EngineOptions { Device = DeviceChoice.Emulated, DType = dtype });

    private static int GraphLaunches(IEnumerable<ProfileEvent> events) => events.Count(e => e.Kind == ProfileEventKind.Graph);

    [TestCase(DType.F32)]
    [TestCase(DType.BF16)]
    public void GreedyTokensAreTheEagerPathsAndEachTokenAfterTheCaptureIsOneGraphLaunch(DType dtype)
    {
        using var engine = Emulated(dtype);
        var generator = new Generator(engine.Model, engine.Tokenizer);
        var options = new GenerationOptions { MaxNewTokens = 12, StopAtEndOfText = false };
        var eager = generator.Generate("And God said", options with { CudaGraphs = false }).Tokens;
        IReadOnlyList<int> graphed = [];
        var events = ProfileRecorder.Record(() => graphed = generator.Generate("And God said", options).Tokens);
        Assert.That(graphed, Is.EqualTo(eager));
        // Token 1 comes from the prefill, token 2 from the one eager step; tokens 3..12 are one replay each.
        Assert.That(GraphLaunches(events), Is.EqualTo(10));
        Assert.That(events.Count(e => e.Kind is ProfileEventKind.Kernel or ProfileEventKind.Blas && e.InGraph), Is.GreaterThan(10 * engine.Model.Config.NumHiddenLayers));
    }

    [Test]
    public void ABatchOfRowsAtDifferentLengthsStoppingAtDifferentTimesGivesTheEagerTokens()
    {
        using var engine = Emulated(DType.F32);
        var generator = new Generator(engine.Model, engine.Tokenizer);
        int limit = engine.Model.Config.MaxPositionEmbeddings;
        var random = new Random(4);
        // Row 0 fills the context after 7 tokens (ContextFull: the 7th is never fed back), row 1 stops at max tokens, row 2 is short.
        IReadOnlyList<int>[] prompts =
        [
            [.. Enumerable.Range(0, limit - 6).Select(_ => random.Next(500))],
            [.. Enumerable.Range(0, 9).Select(_ => random.Next(500))],
            [3, 14, 15],
        ];
        var options = new GenerationOptions { MaxNewTokens = 10, StopAtEndOfText = false };
        var eager = generator.GenerateBatch(prompts, options with { CudaGraphs = false });
        var graphed = generator.GenerateBatch(prompts, options);
        for (int r = 0; r < prompts.Length; r++)
        {
            Assert.That(graphed[r].Tokens, Is.EqualTo(eager[r].Tokens), $"row {r}");
            Assert.That(graphed[r].StopReason, Is.EqualTo(eager[r].StopReason), $"row {r}");
        }
        Assert.That(eager[0].StopReason, Is.EqualTo(StopReason.ContextFull));
        Assert.That(eager[0].Tokens, Has.Count.EqualTo(7));
        Assert.That(eager[1].StopReason, Is.EqualTo(StopReason.MaxTokens));
    }

    [Test]
    public void SampledTokensAreTheEagerPaths_TheGraphCopiesOutTheLogits()
    {
        using var engine = Emulated(DType.BF16);
        var generator = new Generator(engine.Model, engine.Tokenizer);
        var options = new GenerationOptions
        {
            MaxNewTokens = 9, StopAtEndOfText = false, Sampling = new SamplingOptions { Temperature = 0.9, TopK = 40, TopP = 0.9, Seed = 5 },
        };
        IReadOnlyList<IReadOnlyList<int>> prompts = [[5, 6, 7], [8, 9, 10, 11, 12]];
        var eager = generator.GenerateBatch(prompts, options with { CudaGraphs = false });
        IReadOnlyList<GenerationResult> graphed = [];
        var events = ProfileRecorder.Record(() => graphed = generator.GenerateBatch(prompts, options));
        Assert.That(graphed.Select(g => g.Tokens), Is.EqualTo(eager.Select(e => e.Tokens)));
        Assert.That(GraphLaunches(events), Is.EqualTo(7));
    }

    [Test]
    public void AReusedCacheReplaysTheSameGraph_AndAnAdapterChangeRecaptures()
    {
        using var engine = Emulated(DType.F32);
        var model = engine.Model;
        int[] first = [1, 2, 3, 4], second = [40, 41];

        // The reference: the eager path through a cache, each token fed back (greedy, host argmax).
        List<int> Eager(int[] prompt, int steps)
        {
            using var cache = new KeyValueCache(model, 1, 32);
            return Decode(model, cache, prompt, steps, null);
        }

        var expectedFirst = Eager(first, 6);
        var expectedSecond = Eager(second, 6);
        using (var cache = new KeyValueCache(model, 1, 32))
        using (var graph = new DecodeGraph(model, cache, greedy: true))
        {
            Assert.That(Decode(model, cache, first, 6, graph), Is.EqualTo(expectedFirst));
            cache.Reset();
            Assert.That(Decode(model, cache, second, 6, graph), Is.EqualTo(expectedSecond), "the cache reused for another prompt");
            Assert.That(cache.RowLength(0), Is.EqualTo(second.Length + 5), "the host's lengths follow the device's");
            Assert.That(graph.Captures, Is.EqualTo(1));

            var adapted = model.Layers.Select(layer => layer.SelfAttention.Dense).ToList();
            foreach (var dense in adapted) dense.Adapter = new AddingInput();
            try
            {
                var expectedAdapted = Eager(second, 4);
                cache.Reset();
                Assert.That(Decode(model, cache, second, 4, graph), Is.EqualTo(expectedAdapted), "after the adapter was attached");
                Assert.That(graph.Captures, Is.EqualTo(2), "the changed adapter re-captured the step");
                Assert.That(expectedAdapted, Is.Not.EqualTo(expectedSecond.Take(4)), "the adapter changes the tokens, so the test can fail");
            }
            finally
            {
                foreach (var dense in adapted) dense.Adapter = null;
            }
        }
    }

    [Test]
    public void ACaptureThatFailsLeavesTheDecodingEager()
    {
        // An adapter that uploads from the host on every forward cannot be captured: the rest is decoded eagerly, same tokens.
        using var engine = Emulated(DType.F32);
        var generator = new Generator(engine.Model, engine.Tokenizer);
        var options = new GenerationOptions { MaxNewTokens = 6, StopAtEndOfText = false };
        var q = engine.Model.Layers[0].SelfAttention.QProj;
        q.Adapter = new Uploading();
        try
        {
            var eager = generator.Generate([7, 8, 9], options with { CudaGraphs = false }).Tokens;
            IReadOnlyList<int> graphed = [];
            var events = ProfileRecorder.Record(() => graphed = generator.Generate([7, 8, 9], options).Tokens);
            Assert.That(graphed, Is.EqualTo(eager));
            Assert.That(GraphLaunches(events), Is.Zero);
        }
        finally
        {
            q.Adapter = null;
        }
    }

    // Prefill, then steps - 1 decode steps (the first eager, the rest through the graph when given) -> steps tokens.
    private static List<int> Decode(Phi2Model model, KeyValueCache cache, int[] prompt, int steps, DecodeGraph? graph)
    {
        var tokens = new List<int>();
        float[] logits;
        using (TensorScope.Begin()) logits = model.ForwardLast(model.CreateInputIds(prompt), cache).ToSingleArray();
        int next = Sampler.ArgMax(logits);
        tokens.Add(next);
        for (int step = 1; step < steps; step++)
        {
            if (graph is not null && step > 1) next = graph.Step([next]).Chosen![0];
            else
            {
                using var scope = TensorScope.Begin();
                next = Sampler.ArgMax(model.ForwardLast(model.CreateInputIds([next]), cache).ToSingleArray());
            }
            tokens.Add(next);
        }
        return tokens;
    }

    // 30 (y + x) on a [C, C] Linear: two launches more in each layer, so the re-capture cannot update the old graph in place.
    private sealed class AddingInput : IModuleAdapter
    {
        public Tensor Forward(Tensor input, Tensor baseOutput, bool training)
        {
            var y = baseOutput.Backend.Add(baseOutput, input);
            y.Backend.ScaleInPlace(y, 30);
            return y;
        }
    }

    private sealed class Uploading : IModuleAdapter
    {
        public Tensor Forward(Tensor input, Tensor baseOutput, bool training)
        {
            using var zeros = baseOutput.Backend.FromBytes(new byte[baseOutput.ElementCount * 4], DType.F32, baseOutput.Shape, baseOutput.DType);
            return baseOutput.Backend.Add(baseOutput, zeros);
        }
    }
}
