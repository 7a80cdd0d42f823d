using System.Diagnostics;
using Phi2Native.Backends.Cpu;
using Phi2Native.Embedded;
using Phi2Native.FineTuning;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;

namespace Phi2Native.Bench;

/// <summary>
/// The prefill of a long prompt through the KV cache, as generation runs it, two ways: logits of every position
/// (lm_head on B x T rows, B x T x V floats copied to the host) and logits of the last position only (lm_head on B
/// rows, B x V floats copied), which is what generation needs. Validates that both give the same last-position
/// logits, then reports the median time, the lm_head rows, the bytes copied and the peak of transient memory.
/// </summary>
internal static class PrefillBench
{
    private sealed record Case(string Name, Func<IBackend, Phi2Model> Create, int Time);

    public static int Run(ArgReader args)
    {
        int reps = args.Int("reps", 5), warmup = args.Int("warmup", 2, min: 0);
        int time = args.Int("time", EmbeddedDefault.Config.MaxPositionEmbeddings - 1);
        int phi2Time = args.Int("phi2-time", 512);
        bool phi2 = !args.Flag("no-phi2"), markdown = args.Flag("markdown");
        args.RejectUnknown();
        if (time > EmbeddedDefault.Config.MaxPositionEmbeddings)
            throw new ArgumentException($"--time {time} exceeds the embedded model's {EmbeddedDefault.Config.MaxPositionEmbeddings} positions");

        Console.WriteLine($"{DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, .NET {Environment.Version}, CPU backend, fp32, {Environment.ProcessorCount} threads, " +
                          $"median of {reps} after {warmup} warm-up prefills, B = 1");
        Console.WriteLine();
        var cases = new List<Case> { new("embedded (random weights)", b => EmbeddedDefault.CreateRandomModel(b), time) };
        // Phi-2's widths and vocabulary cut to 2 layers: lm_head (51200 x 2560) weighs as much as ~1.7 layers there.
        if (phi2) cases.Add(new("Phi-2 dims, 2 layers", b => Phi2Model.CreateRandom(Phi2Config.Phi2 with { NumHiddenLayers = 2 }, b, seed: 1), phi2Time));

        var table = new Table("model", "T", "logits of", "prefill ms", "lm_head rows", "logits copied", "transient peak MiB");
        foreach (var c in cases)
        {
            using var backend = new CpuBackend();
            using var model = c.Create(backend);
            var random = new Random(3);
            var ids = Enumerable.Range(0, c.Time).Select(_ => random.Next(model.Config.VocabSize)).ToArray();
            using var cache = new KeyValueCache(model, 1, c.Time);
            Validate(model, cache, ids);
            foreach (bool lastOnly in new[] { false, true })
            {
                var times = new List<double>();
                long rows = 0, copied = 0, peak = 0;
                for (int rep = 0; rep < warmup + reps; rep++)
                {
                    cache.Reset();
                    long baseline = backend.Memory.BytesInUse, rowsBefore = model.Counters.LogitRowsComputed;
                    backend.ResetPeakMemory();
                    var clock = Stopwatch.StartNew();
                    float[] logits = Prefill(model, cache, ids, lastOnly);
                    double ms = clock.Elapsed.TotalMilliseconds;
                    if (rep < warmup) continue;
                    times.Add(ms);
                    (rows, copied, peak) = (model.Counters.LogitRowsComputed - rowsBefore, logits.LongLength * sizeof(float), backend.Memory.PeakBytesInUse - baseline);
                }
                table.Add(c.Name, c.Time.ToString(), lastOnly ? "last position" : "every position", Median(times).ToString("F1"),
                    rows.ToString("N0"), Bytes(copied), (peak / 1048576.0).ToString("F1"));
            }
        }
        table.Write(Console.Out, markdown);
        Console.WriteLine();
        Console.WriteLine("prefill ms: the cache forward over the prompt plus the copy of its logits to the host (what Generator does before the first token).");
        Console.WriteLine("transient peak: the most memory held during the prefill beyond the weights and the KV cache.");
        return 0;
    }

    /// <summary>One prefill from an empty cache; returns the logits copied to the host.</summary>
    private static float[] Prefill(Phi2Model model, KeyValueCache cache, int[] ids, bool lastOnly)
    {
        using var scope = TensorScope.Begin();
        var input = model.CreateInputIds(ids);
        return (lastOnly ? model.ForwardLast(input, cache) : model.Forward(input, cache)).ToSingleArray();
    }

    private static void Validate(Phi2Model model, KeyValueCache cache, int[] ids)
    {
        cache.Reset();
        float[] every = Prefill(model, cache, ids, lastOnly: false);
        cache.Reset();
        float[] last = Prefill(model, cache, ids, lastOnly: true);
        int vocab = model.Config.VocabSize;
        var expected = every.AsSpan(every.Length - vocab);
        double scale = 0;
        foreach (float v in expected) scale = Math.Max(scale, Math.Abs(v));
        for (int v = 0; v < vocab; v++)
            if (Math.Abs(last[v] - expected[v]) > 1e-5 * scale + 1e-4 * Math.Abs(expected[v]))
                throw new InvalidOperationException($"last-position logits differ from the full prefill's at id {v}: {last[v]} vs {expected[v]}");
    }

    private static string Bytes(long bytes) => bytes >= 1 << 20 ? $"{bytes / 1048576.0:F1} MiB" : $"{bytes / 1024.0:F1} KiB";

    private static double Median(List<double> values)
    {
        values.Sort();
        return values[values.Count / 2];
    }
}
