using System.Diagnostics;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;
using Phi2Native.Text;

namespace Phi2Native.GpuCheck;

// The whole-model generation cases: prefill, one eager decode step, and greedy decoding through the Generator (what a
// host gets), eager and from the CUDA graph; they share one model, built once.
internal sealed partial class Benchmarks
{
    /// <summary>The greedy decoding case with every step's kernels launched one by one; bench/peers/gpu_peers.py looks it up.</summary>
    public const string GreedyDecodeEagerName = "model decode, greedy (Generator, eager)";

    /// <summary>The greedy decoding case replayed from the decode step's CUDA graph; bench/peers/gpu_peers.py looks it up.</summary>
    public const string GreedyDecodeGraphName = "model decode, greedy (Generator, CUDA graph)";

    private Phi2Model? _generationModel;

    private BenchOutcome Generation(bool prefillOnly)
    {
        var config = _sizes.Model;
        var build = Stopwatch.StartNew();
        // Built for the prefill case, kept for the decode cases after it, disposed by the last (GreedyDecode with graphs).
        var model = _generationModel ??= RandomModel(config, seed: 9);
        double buildSeconds = build.Elapsed.TotalSeconds;
        try
        {
            int prefill = _sizes.Prefill;
            int capacity = Math.Min(config.MaxPositionEmbeddings, prefill + WarmUp + MaxReps + 2);   // + the modelled repetition
            int[] prompt = Ids(prefill, config.VocabSize, 10);
            using var cache = new KeyValueCache(model, 1, capacity);
            if (prefillOnly)
            {
                var (pms, preps) = Time(() =>
                {
                    cache.Reset();
                    using var scope = TensorScope.Begin();
                    model.ForwardLast(model.CreateInputIds(prompt), cache);
                }, warmUp: 1, maxReps: 3);
                return new BenchOutcome("model prefill (KV cache, last logits)", $"{config.NumHiddenLayers} layers, B 1, T {prefill}", DtName,
                    BenchStatus.Ran, pms, prefill / (pms / 1000), "tokens/s", preps, $"built in {Format.Seconds(buildSeconds)} s");
            }
            using (TensorScope.Begin()) model.ForwardLast(model.CreateInputIds(prompt), cache);
            int next = 1, firstTimed = prefill + WarmUp + 1;
            var (ms, reps) = Time(() =>
            {
                using var scope = TensorScope.Begin();
                model.ForwardLast(model.CreateInputIds([next++ % config.VocabSize]), cache);
            }, maxReps: Math.Min(MaxReps, capacity - prefill - WarmUp - 1));
            return new BenchOutcome("model decode step (KV cache)", $"{config.NumHiddenLayers} layers, B 1, keyTime {firstTimed}-{firstTimed + reps - 1}",
                DtName, BenchStatus.Ran, ms, 1000 / ms, "tokens/s", reps, $"ms = ms/token (one token through every layer and lm_head)");
        }
        catch
        {
            DisposeGenerationModel();
            throw;
        }
    }

    /// <summary>
    /// Greedy decoding at batch 1 through <see cref="Generator"/> as a host runs it (the device's argmax, one host read a
    /// token, the step replayed from its CUDA graph when <paramref name="cudaGraphs"/>), timed the way the GPU peers
    /// time HF's: generating <see cref="BenchSizes.NewTokens"/> tokens after the prompt less the prefill alone, over
    /// the new tokens. The graph's warm-up step and capture are inside the timed generation, as HF's overheads are in its.
    /// </summary>
    private BenchOutcome GreedyDecode(bool cudaGraphs)
    {
        var config = _sizes.Model;
        var model = _generationModel ??= RandomModel(config, seed: 9);
        try
        {
            int[] prompt = Ids(_sizes.Prefill, config.VocabSize, 10);
            var generator = new Generator(model);
            var decode = new GenerationOptions { MaxNewTokens = _sizes.NewTokens + 1, StopAtEndOfText = false, CudaGraphs = cudaGraphs };
            var prefillOnly = decode with { MaxNewTokens = 1 };
            var (prefillMs, _) = Time(() => generator.Generate(prompt, prefillOnly), warmUp: 1, maxReps: 3);
            double modelledPrefillMs = TakeModelledMs();
            var (totalMs, reps) = Time(() => generator.Generate(prompt, decode), warmUp: 1, maxReps: 3);
            _modelledMs = (TakeModelledMs() - modelledPrefillMs) / _sizes.NewTokens;   // per token, as the measured figure
            double ms = (totalMs - prefillMs) / _sizes.NewTokens;
            return new BenchOutcome("", $"{config.NumHiddenLayers} layers, B 1, {_sizes.NewTokens} tokens after {_sizes.Prefill}", DtName,
                BenchStatus.Ran, ms, ms > 0 ? 1000 / ms : double.NaN, "tokens/s", reps,
                $"ms/token = (generate {_sizes.NewTokens} - prefill alone) / {_sizes.NewTokens}: {totalMs:F2} - {prefillMs:F2} ms");
        }
        finally
        {
            if (cudaGraphs) DisposeGenerationModel();
        }
    }

    private void DisposeGenerationModel()
    {
        _generationModel?.Dispose();
        _generationModel = null;
    }
}
