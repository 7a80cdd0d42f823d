using System.Diagnostics;
using Phi2Native.Backends.Cpu;
using Phi2Native.Embedded;
using Phi2Native.FineTuning;
using Phi2Native.Models.Phi2;
using Phi2Native.Text;

namespace Phi2Native.Bench;

/// <summary>
/// Greedy generation for a batch of prompts of different lengths, two ways: row after row (one Generate per prompt,
/// as before batching) and as one batch (Generator.GenerateBatch: one prefill, one forward per step for all rows).
/// Validates that every row gets the same tokens both ways, then reports the median wall time and new tokens per second.
/// </summary>
internal static class GenerateBench
{
    private sealed record Case(string Name, Func<Phi2Model> Create, int[] PromptLengths, int NewTokens);

    public static int Run(ArgReader args)
    {
        int reps = args.Int("reps", 3), warmup = args.Int("warmup", 1, min: 0);
        int batch = args.Int("batch", 8), newTokens = args.Int("tokens", 32);
        bool phi2 = !args.Flag("no-phi2"), markdown = args.Flag("markdown");
        args.RejectUnknown();

        Console.WriteLine($"{DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, .NET {Environment.Version}, CPU backend, fp32, {Environment.ProcessorCount} threads, " +
                          $"greedy, median of {reps} after {warmup} warm-up runs");
        Console.WriteLine();
        // Prompt lengths spread over [8, 128): the batch is right-padded to the longest, each row decodes at its own positions.
        int[] lengths = Enumerable.Range(0, batch).Select(i => 8 + i * 120 / Math.Max(batch, 1)).ToArray();
        var cases = new List<Case> { new("embedded (random weights)", () => EmbeddedDefault.CreateRandomModel(CpuBackend.Default), lengths, newTokens) };
        // Phi-2's widths cut to 2 layers: each decode step streams 1.7 GB of weights, which a batch shares.
        if (phi2) cases.Add(new("Phi-2 dims, 2 layers", () => Phi2Model.CreateRandom(Phi2Config.Phi2 with { NumHiddenLayers = 2 }, CpuBackend.Default, seed: 1),
            [16, 40, 64, 100], Math.Min(newTokens, 16)));

        var table = new Table("model", "B", "prompt lengths", "new tokens", "how", "ms", "new tokens/s", "speed-up");
        foreach (var c in cases)
        {
            using var model = c.Create();
            var random = new Random(4);
            IReadOnlyList<int>[] prompts = c.PromptLengths.Select(n => (IReadOnlyList<int>)Enumerable.Range(0, n).Select(_ => random.Next(model.Config.VocabSize)).ToArray()).ToArray();
            var generator = new Generator(model);
            var options = new GenerationOptions { MaxNewTokens = c.NewTokens, StopAtEndOfText = false };
            IReadOnlyList<int>[] RowByRow() => prompts.Select(p => generator.Generate(p, options).Tokens).ToArray();
            IReadOnlyList<int>[] Batched() => generator.GenerateBatch(prompts, options).Select(r => r.Tokens).ToArray();
            var alone = RowByRow();
            var together = Batched();
            for (int r = 0; r < prompts.Length; r++)
                if (!alone[r].SequenceEqual(together[r]))
                    throw new InvalidOperationException($"{c.Name}: row {r} generates different tokens in the batch than alone");
            int total = alone.Sum(t => t.Count);
            double rowMs = Time(() => RowByRow(), warmup, reps), batchMs = Time(() => Batched(), warmup, reps);
            string shape = string.Join(",", c.PromptLengths);
            table.Add(c.Name, prompts.Length.ToString(), shape, c.NewTokens.ToString(), "row after row", rowMs.ToString("F0"), (total / (rowMs / 1000)).ToString("F1"), "1.00");
            table.Add(c.Name, prompts.Length.ToString(), shape, c.NewTokens.ToString(), "one batch", batchMs.ToString("F0"), (total / (batchMs / 1000)).ToString("F1"), (rowMs / batchMs).ToString("F2"));
        }
        table.Write(Console.Out, markdown);
        Console.WriteLine();
        Console.WriteLine("ms: the whole generation for every prompt (prefills included); every row's tokens are the same both ways.");
        return 0;
    }

    private static double Time(Action action, int warmup, int reps)
    {
        for (int i = 0; i < warmup; i++) action();
        var times = new List<double>();
        for (int i = 0; i < reps; i++)
        {
            var clock = Stopwatch.StartNew();
            action();
            times.Add(clock.Elapsed.TotalMilliseconds);
        }
        times.Sort();
        return times[times.Count / 2];
    }
}
