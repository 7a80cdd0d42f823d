using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using NUnit.Framework;
using Phi2Native.Backends;
using Phi2Native.Backends.Cpu;
using Phi2Native.Embedded;
using Phi2Native.FineTuning;
using Phi2Native.FineTuning.Lora;
using Phi2Native.Hosting;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;
using Phi2Native.Text;

namespace Phi2Native.Tests.Text;

/// <summary>
/// The host API under real concurrency and early exits (the README's thread-safety contract, "Threads"): leaving an
/// await foreach stops the generation before its next forward and frees its cache; Dispose cancels and waits for every
/// generation; many generations (streamed, blocking, traces) on one engine, on two engines sharing a backend, and on two
/// engines with backends of their own, run at once and each gives its sequential result; one tokenizer serves many threads.
/// </summary>
[TestFixture]
public class Phi2EngineConcurrencyTests : TemporaryDirectoryTest
{
    private const string Prompt = "And God said";
    private static readonly GenerationOptions Long = new() { MaxNewTokens = 200, StopAtEndOfText = false };

    /// <summary>An engine on a CPU backend of the test's own, so its memory in use is the engine's alone.</summary>
    private static (Phi2Engine Engine, CpuBackend Backend) PrivateEngine()
    {
        var backend = new CpuBackend();
        return (Phi2Engine.Load(new Phi2EngineOptions { Backend = backend }), backend);
    }

    [TestCase("break")]
    [TestCase("throw")]
    [TestCase("dispose")]
    public async Task LeavingTheLoopEarlyStopsBeforeTheNextForwardAndFreesTheCache(string how)
    {
        var (engine, backend) = PrivateEngine();
        using var _ = backend;
        using var __ = engine;
        long weights = backend.Memory.BytesInUse, before = engine.Model.Counters.TokensComputed;
        int promptLength = engine.Tokenizer.Encode(Prompt).Length, received = 0;
        switch (how)
        {
            case "break":
                await foreach (var token in engine.GenerateAsync(Prompt, Long))
                    if (++received == 3) break;
                break;
            case "throw":
                Assert.ThrowsAsync<InvalidOperationException>(async () =>
                {
                    await foreach (var token in engine.GenerateAsync(Prompt, Long))
                        if (++received == 3) throw new InvalidOperationException("the consumer fails");
                });
                break;
            case "dispose":
                var tokens = engine.GenerateAsync(Prompt, Long).GetAsyncEnumerator();
                while (received < 3 && await tokens.MoveNextAsync()) received++;
                await tokens.DisposeAsync();
                break;
        }
        // Token 1 comes from the prefill, tokens 2 and 3 from one decode step each; token 4's forward never runs.
        long computed = engine.Model.Counters.TokensComputed - before;
        Assert.That(computed, Is.EqualTo(promptLength + 2));
        await Task.Delay(200);
        Assert.That(engine.Model.Counters.TokensComputed - before, Is.EqualTo(computed), "nothing runs after the loop is left");
        Assert.That(backend.Memory.BytesInUse, Is.EqualTo(weights), "the KV cache is freed");
    }

    [Test]
    public async Task DisposeCancelsAndWaitsForEveryGenerationItStarted()
    {
        var (engine, backend) = PrivateEngine();
        using var _ = backend;
        var started = new CountdownEvent(3);
        var consumers = Enumerable.Range(0, 3).Select(i => Task.Run(async () =>
        {
            int received = 0;
            await foreach (var token in engine.GenerateAsync(Prompt, Long with { Sampling = new SamplingOptions { Seed = (ulong)i } }))
            {
                if (++received == 2) started.Signal();
                // A slow consumer: no generation runs to its end before the others have started.
                await Task.Delay(5);
            }
            return received;
        })).ToArray();
        Assert.That(started.Wait(TimeSpan.FromSeconds(60)), Is.True, "all three are generating");
        engine.Dispose();
        long computed = engine.Model.Counters.TokensComputed;
        Assert.That(backend.Memory.BytesInUse, Is.Zero, "when Dispose returns, no step runs and every cache and the model are freed");
        foreach (var consumer in consumers)
            Assert.That(async () => await consumer, Throws.InstanceOf<OperationCanceledException>());
        await Task.Delay(200);
        Assert.That(engine.Model.Counters.TokensComputed, Is.EqualTo(computed), "no forward after Dispose");
        Assert.That(() => engine.GenerateAsync(Prompt), Throws.InstanceOf<ObjectDisposedException>());
    }

    [TestCase("generate")]
    [TestCase("trace")]
    public async Task ABlockingCallStillWaitingForTheTurnWhenTheEngineIsDisposedThrowsObjectDisposed(string call)
    {
        var (engine, backend) = PrivateEngine();
        using var _ = backend;
        int[] ids = engine.EncodePrompt(Prompt);
        var turn = BackendTurns.For(engine.Backend);
        turn.Wait();
        Task<object> waiting, disposing;
        try
        {
            waiting = Task.Run(() => call == "generate" ? (object)engine.Generate(ids, Options(0)) : engine.Trace(ids, gradients: false));
            disposing = Task.Run(() => { engine.Dispose(); return (object)"disposed"; });
            // Dispose has begun (new calls are refused) but waits for the turn the test holds.
            while (!RefusesNewCalls(engine)) await Task.Delay(5);
        }
        finally
        {
            turn.Release();
        }
        Assert.That(async () => await waiting, Throws.InstanceOf<ObjectDisposedException>(), "not a call on freed weights");
        Assert.That(await disposing, Is.EqualTo("disposed"));
        Assert.That(backend.Memory.BytesInUse, Is.Zero);
    }

    // Whether the engine refuses new calls, which it does from the moment Dispose begins (the stream asked for here
    // is never enumerated, so nothing computes).
    private static bool RefusesNewCalls(Phi2Engine engine)
    {
        try
        {
            engine.GenerateAsync(Prompt);
            return false;
        }
        catch (ObjectDisposedException)
        {
            return true;
        }
    }

    /// <summary>
    /// Each generation's ids, all run at once: every generation holds its first token (and its KV cache) before any
    /// asks for a second, so they overlap whatever the thread pool's order; <paramref name="arrivals"/> records whose
    /// token came when.
    /// </summary>
    private static async Task<int[][]> Concurrently(IReadOnlyList<(Phi2Engine Engine, GenerationOptions Options)> runs, ConcurrentQueue<int> arrivals)
    {
        var allStarted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        int started = 0;
        var tasks = runs.Select((run, index) => Task.Run(async () =>
        {
            var ids = new List<int>();
            await foreach (var token in run.Engine.GenerateAsync(Prompt, run.Options))
            {
                ids.Add(token.Id);
                arrivals.Enqueue(index);
                if (ids.Count == 1 && Interlocked.Increment(ref started) == runs.Count) allStarted.SetResult();
                await allStarted.Task;
            }
            return ids.ToArray();
        })).ToArray();
        return await Task.WhenAll(tasks);
    }

    // Each run alone, one after another: what the same runs started together must give.
    private static async Task<int[][]> Sequentially(IReadOnlyList<(Phi2Engine Engine, GenerationOptions Options)> runs)
    {
        var results = new int[runs.Count][];
        for (int i = 0; i < runs.Count; i++) results[i] = await Alone(runs[i].Engine, runs[i].Options);
        return results;
    }

    // The runs started together: each gives its sequential result, and they ran at the same time.
    private static async Task AssertConcurrentlyAsSequentially(IReadOnlyList<(Phi2Engine Engine, GenerationOptions Options)> runs, int[][] sequential,
        Func<int, string>? name = null)
    {
        var arrivals = new ConcurrentQueue<int>();
        var concurrent = await Concurrently(runs, arrivals);
        for (int i = 0; i < runs.Count; i++) Assert.That(concurrent[i], Is.EqualTo(sequential[i]), name?.Invoke(i) ?? $"generation {i}");
        AssertInterleaved(arrivals, runs.Count);
    }

    private static async Task<int[]> Alone(Phi2Engine engine, GenerationOptions options)
    {
        var ids = new List<int>();
        await foreach (var token in engine.GenerateAsync(Prompt, options)) ids.Add(token.Id);
        return [.. ids];
    }

    private static GenerationOptions Options(int i) => new()
    {
        MaxNewTokens = 10 + i, StopAtEndOfText = false,
        Sampling = i % 3 == 0 ? SamplingOptions.Greedy : new SamplingOptions { Temperature = 0.9, TopK = 40, Seed = (ulong)i },
    };

    private static void AssertInterleaved(ConcurrentQueue<int> arrivals, int runs)
    {
        var order = arrivals.ToArray();
        var first = Enumerable.Range(0, runs).Select(r => Array.IndexOf(order, r)).ToArray();
        var last = Enumerable.Range(0, runs).Select(r => Array.LastIndexOf(order, r)).ToArray();
        bool overlapped = Enumerable.Range(0, runs).Any(a => Enumerable.Range(0, runs).Any(b => a != b && first[b] < last[a] && first[a] < last[b]));
        Assert.That(overlapped, Is.True, $"the generations ran at the same time: {string.Join("", order)}");
    }

    [Test]
    public async Task ManyConcurrentGenerationsOnOneEngineEachGiveTheirSequentialResult()
    {
        using var engine = Phi2Engine.Load();
        var runs = Enumerable.Range(0, 6).Select(i => (engine, Options(i))).ToList();
        var sequential = await Sequentially(runs);
        await AssertConcurrentlyAsSequentially(runs, sequential);
    }

    [Test]
    public async Task TwoEnginesOnOneBackendRunAtOnceAndKeepTheirOwnWeights()
    {
        // Engine B carries an adapter that changes the logits: mixed-up state between the engines would show.
        string adapter = Path.Combine(Temp, "adapter");
        using (var model = EmbeddedDefault.CreateModel(CpuBackend.Default))
        using (var lora = LoraModel.Create(model, new LoraConfig { R = 4, Alpha = 8, TargetModules = ["q_proj", "v_proj", "fc2"] }, seed: 2))
        {
            var random = new Random(3);
            foreach (var b in lora.LinearAdapters.Select(a => a.B))
            {
                var values = b.ToSingleArray().Select(_ => (float)(random.NextDouble() - 0.5)).ToArray();
                using var source = b.Backend.FromBytes(MemoryMarshal.AsBytes(values.AsSpan()), DType.F32, b.Shape, b.DType);
                b.Backend.Copy(source, b);
            }
            PeftAdapter.Save(lora, adapter);
        }
        using var plain = Phi2Engine.Load();
        using var adapted = Phi2Engine.Load(adapterDirectory: adapter);
        Assert.That(adapted.Backend, Is.SameAs(plain.Backend), "both on the shared CPU backend");
        var runs = Enumerable.Range(0, 6).Select(i => (i % 2 == 0 ? plain : adapted, Options(i / 2 * 3))).ToList();
        var sequential = await Sequentially(runs);
        Assert.That(sequential[1], Is.Not.EqualTo(sequential[0]), "the adapter changes what is generated");
        await AssertConcurrentlyAsSequentially(runs, sequential, i => $"generation {i} ({(i % 2 == 0 ? "plain" : "adapted")})");
    }

    [Test]
    public async Task EveryStepTakesTheBackendsTurnWhichEnginesOnOneBackendShare()
    {
        // Backends are driven by one thread at a time: while the turn is held (here by the test), no step computes.
        using var engine = Phi2Engine.Load();
        using var other = Phi2Engine.Load();
        var turn = BackendTurns.For(engine.Backend);
        Assert.That(BackendTurns.For(other.Backend), Is.SameAs(turn));
        long before = engine.Model.Counters.TokensComputed;
        turn.Wait();
        Task<GeneratedToken> first;
        try
        {
            first = Task.Run(async () =>
            {
                await foreach (var token in engine.GenerateAsync(Prompt, Long)) return token;
                throw new InvalidOperationException("no token");
            });
            await Task.Delay(300);
            Assert.That(first.IsCompleted, Is.False);
            Assert.That(engine.Model.Counters.TokensComputed, Is.EqualTo(before), "the prefill waits for the turn");
        }
        finally
        {
            turn.Release();
        }
        Assert.That((await first).Id, Is.GreaterThanOrEqualTo(0));
        Assert.That(engine.Model.Counters.TokensComputed, Is.GreaterThan(before));
    }

    [Test]
    public async Task StreamsBlockingGenerationsAndTracesFromManyThreadsOnOneEngineEachGiveWhatTheyGiveAlone()
    {
        // Every entry point that computes takes the backend's turn: Generate on the caller's thread, Trace, and the
        // steps of GenerateAsync on the thread pool, all at once on one engine.
        using var engine = Phi2Engine.Load();
        int[] promptIds = engine.EncodePrompt(Prompt);
        int[] traceIds = engine.EncodePrompt("In the beginning God created the heaven and the earth.");
        var streamOptions = Options(1);
        var blockingOptions = Options(2);
        int[] streamAlone = await Alone(engine, streamOptions);
        var blockingAlone = engine.Generate(promptIds, blockingOptions).Tokens;
        var traceAlone = engine.Trace(traceIds, gradients: true);

        using var go = new ManualResetEventSlim();
        var stream = Task.Run(async () => { go.Wait(); return await Alone(engine, streamOptions); });
        var blocking = Enumerable.Range(0, 2).Select(_ => Task.Run(() => { go.Wait(); return engine.Generate(promptIds, blockingOptions).Tokens; })).ToArray();
        var traces = Enumerable.Range(0, 2).Select(_ => Task.Run(() => { go.Wait(); return engine.Trace(traceIds, gradients: true); })).ToArray();
        go.Set();

        Assert.That(await stream, Is.EqualTo(streamAlone));
        foreach (var result in blocking) Assert.That(await result, Is.EqualTo(blockingAlone));
        foreach (var trace in traces)
        {
            var result = await trace;
            Assert.That(result.Loss, Is.EqualTo(traceAlone.Loss));
            Assert.That(result.Logits, Is.EqualTo(traceAlone.Logits));
            Assert.That(result.Gradients.Select(g => g.Values), Is.EqualTo(traceAlone.Gradients.Select(g => g.Values)));
        }
    }

    [Test]
    public async Task EnginesOnTwoBackendsTakeNoTurnsFromEachOtherAndGiveTheirSequentialResult()
    {
        // Two CPU backends of the host's own: each engine has its backend's turn to itself.
        var (first, firstBackend) = PrivateEngine();
        var (second, secondBackend) = PrivateEngine();
        using var _ = firstBackend;
        using var __ = secondBackend;
        using var ___ = first;
        using var ____ = second;
        Assert.That(BackendTurns.For(second.Backend), Is.Not.SameAs(BackendTurns.For(first.Backend)));
        var runs = Enumerable.Range(0, 4).Select(i => (i % 2 == 0 ? first : second, Options(i))).ToList();
        var sequential = await Sequentially(runs);
        await AssertConcurrentlyAsSequentially(runs, sequential);

        // While the first backend's turn is held, the second engine generates to the end, and the first waits.
        var turn = BackendTurns.For(first.Backend);
        turn.Wait();
        try
        {
            Assert.That(await Alone(second, Options(1)), Is.EqualTo(sequential[1]));
            using var waited = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));
            Assert.That(() => first.Generate(first.EncodePrompt(Prompt), Options(0), cancellationToken: waited.Token),
                Throws.InstanceOf<OperationCanceledException>(), "the first engine waits for its backend's turn");
        }
        finally
        {
            turn.Release();
        }
    }

    [Test]
    public void OneTokenizerEncodesAndDecodesFromManyThreadsAsFromOne()
    {
        var tokenizer = EmbeddedDefault.Tokenizer();
        string[] texts = EmbeddedDefault.ValidationParagraphs.Take(64).ToArray();
        int[][] alone = texts.Select(tokenizer.Encode).ToArray();
        string[] decodedAlone = alone.Select(ids => tokenizer.Decode(ids)).ToArray();
        var encoded = new int[texts.Length][];
        var decoded = new string[texts.Length];
        Parallel.For(0, texts.Length * 4, new ParallelOptions { MaxDegreeOfParallelism = 8 }, j =>
        {
            int i = j % texts.Length;
            encoded[i] = tokenizer.Encode(texts[i]);
            decoded[i] = tokenizer.Decode(encoded[i]);
        });
        Assert.That(encoded, Is.EqualTo(alone));
        Assert.That(decoded, Is.EqualTo(decodedAlone));
    }

    [Test, Category("Emulated")]
    public async Task TwoEmulatedEnginesEachWithItsOwnBackendAndStreamGenerateAtOnceAsEachAloneAndAsTheCpu()
    {
        using var first = Phi2Engine.Load(new Phi2EngineOptions { Device = DeviceChoice.Emulated });
        using var second = Phi2Engine.Load(new Phi2EngineOptions { Device = DeviceChoice.Emulated });
        using var cpu = Phi2Engine.Load();
        Assert.That(second.Backend, Is.Not.SameAs(first.Backend), "each emulated engine opens its own backend");
        var runs = Enumerable.Range(0, 4).Select(i => (i % 2 == 0 ? first : second, Options(i) with { MaxNewTokens = 4 })).ToList();
        var sequential = await Sequentially(runs);
        for (int i = 0; i < runs.Count; i++)
            if (runs[i].Item2.Sampling.IsGreedy)
                Assert.That(sequential[i], Is.EqualTo(await Alone(cpu, runs[i].Item2)), $"generation {i}: the emulated device gives the CPU's greedy tokens");
        await AssertConcurrentlyAsSequentially(runs, sequential);
    }

    [Test, Category("Emulated")]
    public async Task ConcurrentGenerationsOnTheEmulatedDeviceTakeTurnsAndGiveTheirSequentialResult()
    {
        using var engine = Phi2Engine.Load(new Phi2EngineOptions { Device = DeviceChoice.Emulated });
        var runs = Enumerable.Range(0, 3).Select(i => (engine, Options(i) with { MaxNewTokens = 5 })).ToList();
        var sequential = await Sequentially(runs);
        await AssertConcurrentlyAsSequentially(runs, sequential);
    }
}
