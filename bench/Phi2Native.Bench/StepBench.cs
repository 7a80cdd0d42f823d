using System.Diagnostics;
using Phi2Native.Autograd;
using Phi2Native.Backends.Cpu;
using Phi2Native.FineTuning.Lora;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;

namespace Phi2Native.Bench;

/// <summary>
/// End-to-end training steps on the CPU backend: one forward and one backward of the causal-LM loss over
/// random tokens, every parameter trainable. Validates the loss first (F32 against F64 on the tiny model;
/// a random-init model must sit near ln V), then times, and reports tokens/s and model GFLOP/s against the
/// machine's fp32 peak.
/// </summary>
internal static class StepBench
{
    /// <param name="Lora">What trains: null for every parameter, else a LoRA selection.</param>
    private sealed record Case(string Name, Phi2Config Config, int Batch, int Time, LoraConfig? Lora = null);

    private static readonly Phi2Config Phi2TwoLayers = Phi2Config.Phi2 with { NumHiddenLayers = 2 };

    private static readonly Case[] Cases =
    [
        new("tiny (the demo model)", Phi2Config.Tiny, 4, 64),
        // Phi-2's real widths, vocabulary and head layout, cut to 2 layers so it fits a 2-core CI machine.
        new("Phi-2 dims, 2 layers", Phi2TwoLayers, 1, 128),
        // Freezing: the same model with LoRA everywhere, then only in the top layer (backward stops below it).
        new("  LoRA q,v all layers", Phi2TwoLayers, 1, 128, new LoraConfig { R = 8, TargetModules = ["q_proj", "v_proj"] }),
        new("  LoRA q,v layer 1 only", Phi2TwoLayers, 1, 128, new LoraConfig { R = 8, TargetModules = ["q_proj", "v_proj"], LayersToTransform = [1] }),
    ];

    public static int Run(ArgReader args)
    {
        int reps = args.Int("reps", 3), warmup = args.Int("warmup", 1, min: 0);
        bool markdown = args.Flag("markdown");
        int givenPeak = args.Int("peak", 0, min: 0);
        args.RejectUnknown();
        double peak = Machine.Fp32PeakGflops(givenPeak);
        Console.WriteLine($"{DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, .NET {Environment.Version}, fp32, median of {reps} after {warmup} warm-up steps");
        Console.WriteLine();

        var table = new Table("model", "B x T", "trainable", "forward ms", "backward ms", "backward ops", "tokens/s", "GFLOP/s", "% peak", "loss");
        foreach (var c in Cases)
        {
            using var model = Phi2Model.CreateRandom(c.Config, CpuBackend.Default, seed: 1);
            model.SetRequiresGrad(c.Lora is null);
            using var lora = c.Lora is null ? null : LoraModel.Create(model, c.Lora);
            var trainable = lora?.TrainableParameters().ToList() ?? model.Parameters().ToList();
            var tokens = new Random(2).Let(r => Enumerable.Range(0, c.Batch * c.Time).Select(_ => r.Next(c.Config.VocabSize)).ToArray());
            double loss = Validate(c, model, tokens);
            var forward = new List<double>();
            var backward = new List<double>();
            int backwardOps = 0;
            for (int rep = 0; rep < warmup + reps; rep++)
            {
                var (f, b, ops) = TimeStep(model, tokens, c.Batch);
                if (rep >= warmup) { forward.Add(f); backward.Add(b); }
                backwardOps = ops;
                foreach (var p in trainable) p.ZeroGrad();
            }
            double forwardMs = Median(forward), backwardMs = Median(backward), stepMs = forwardMs + backwardMs;
            // Model flops only mean something when every parameter trains (LoRA rows skip weight gradients by design).
            double gflops = StepFlops(c) / (stepMs * 1e6);
            table.Add(c.Name, $"{c.Batch} x {c.Time}", trainable.Sum(p => p.ElementCount).ToString("N0"),
                forwardMs.ToString("F1"), backwardMs.ToString("F1"), backwardOps.ToString(), (c.Batch * c.Time / (stepMs / 1000)).ToString("F0"),
                c.Lora is null ? gflops.ToString("F1") : "-", c.Lora is null ? (100 * gflops / peak).ToString("F1") : "-", loss.ToString("F4"));
        }
        table.Write(Console.Out, markdown);
        Console.WriteLine();
        Console.WriteLine("GFLOP/s counts 3 x the forward's matrix-product flops (forward, input and weight gradients) plus attention's, over forward + backward time.");
        Console.WriteLine("LoRA rows: the base is frozen; with LoRA only in the top layer the backward stops below it (fewer backward ops, less time).");
        return 0;
    }

    private static (double ForwardMs, double BackwardMs, int BackwardOps) TimeStep(Phi2Model model, int[] tokens, int batch)
    {
        using var scope = TensorScope.Begin();
        using var tape = GradientTape.Begin();
        var clock = Stopwatch.StartNew();
        var loss = model.CausalLanguageModelLoss(model.Forward(model.CreateInputIds(tokens, batch)), tokens);
        double forwardMs = clock.Elapsed.TotalMilliseconds;
        clock.Restart();
        tape.Backward(loss);
        return (forwardMs, clock.Elapsed.TotalMilliseconds, tape.BackwardOpsRun);
    }

    private static double Validate(Case c, Phi2Model model, int[] tokens)
    {
        double loss;
        using (TensorScope.Begin()) loss = model.CausalLanguageModelLoss(model.Forward(model.CreateInputIds(tokens, c.Batch)), tokens).Item();
        if (c.Config == Phi2Config.Tiny && c.Lora is null)
        {
            using var reference = Phi2Model.CreateRandom(c.Config, CpuBackend.Default, seed: 1, DType.F64);
            using var scope = TensorScope.Begin();
            double exact = reference.CausalLanguageModelLoss(reference.Forward(reference.CreateInputIds(tokens, c.Batch)), tokens).Item();
            if (Math.Abs(loss - exact) > 1e-4 * Math.Abs(exact))
                throw new InvalidOperationException($"{c.Name}: fp32 loss {loss} differs from the fp64 loss {exact}");
        }
        // normal(0, 0.02) weights give near-uniform predictions.
        if (!(Math.Abs(loss - Math.Log(c.Config.VocabSize)) < 0.5))
            throw new InvalidOperationException($"{c.Name}: loss {loss} is far from ln V = {Math.Log(c.Config.VocabSize):F3} for a random model");
        return loss;
    }

    private static double StepFlops(Case c)
    {
        var cfg = c.Config;
        double tokens = c.Batch * c.Time, hidden = cfg.HiddenSize;
        double perLayer = 4 * hidden * hidden + 2 * hidden * cfg.IntermediateSize;          // q, k, v, dense; fc1, fc2
        double linear = 2 * tokens * (cfg.NumHiddenLayers * perLayer + hidden * cfg.VocabSize);
        // q.k^T and p.v over the causal half, per layer: 2 products x 2 flops x B x T^2/2 x C.
        double attention = cfg.NumHiddenLayers * 2.0 * c.Batch * c.Time * c.Time * hidden;
        // Backward costs about twice the forward (input and weight gradients; attention recomputes more).
        return 3 * (linear + attention);
    }

    private static double Median(List<double> values)
    {
        values.Sort();
        return values[values.Count / 2];
    }

    private static T Let<T>(this Random random, Func<Random, T> make) => make(random);
}
