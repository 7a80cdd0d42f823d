using NUnit.Framework;
using Phi2Native.Autograd.Ops;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Rotary;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Emulator;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;
using Phi2Native.Text;

namespace Phi2Native.Tests.Models;

/// <summary>
/// KV-cache decoding against a full forward per token on weights that make attention sharp and position-dependent.
/// Random weights (std 0.02) give near-uniform attention, under which a decode step that puts its query at the wrong
/// position changes the logits by less than any tolerance: every token-level test passed with such a bug. Here q_proj
/// and k_proj are scaled up and the whole head is rotary, so each query attends to a few keys chosen by their relative
/// position; each step's logits are compared with the full forward over the same tokens, on the CPU and on the CUDA
/// backend over the emulated device, for equal-length rows (one shared position) and for rows at their own positions.
/// </summary>
[TestFixture]
public class SharpAttentionDecodeTests
{
    private static readonly Phi2Config Config = KeyValueCacheTests.Small with { RotaryDim = 8 };   // head dim 8: all of it rotates
    private const double Sharpness = 40;
    private static readonly int[][] Rows = [[3, 17, 5, 36, 0, 21, 9, 9, 14, 2, 30, 11], [8, 1, 33, 12, 7, 7, 25, 4, 19, 28, 6, 16]];

    /// <summary>The random model of <paramref name="config"/> (default <see cref="Config"/>) with q_proj and k_proj scaled by <paramref name="sharpness"/>.</summary>
    internal static Phi2Model SharpModel(IBackend backend, Phi2Config? config = null, double sharpness = Sharpness)
    {
        var model = Phi2Model.CreateRandom(config ?? Config, backend, seed: 5);
        foreach (var parameter in model.Parameters().Where(p => p.Name!.EndsWith("q_proj.weight", StringComparison.Ordinal) || p.Name!.EndsWith("k_proj.weight", StringComparison.Ordinal)))
            backend.ScaleInPlace(parameter, sharpness);
        return model;
    }

    /// <summary>Layer 0's causal attention weights for one row: the mean, over queries past the first, of each query's largest weight (1 = one key only).</summary>
    private static double MeanLargestAttentionWeight(Phi2Model model, int[] ids)
    {
        using var scope = TensorScope.Begin();
        int time = ids.Length, heads = Config.NumAttentionHeads, dim = Config.HeadDim;
        var attention = model.Layers[0].SelfAttention;
        var x = model.Layers[0].InputLayerNorm.Forward(model.EmbedTokens.Forward(model.CreateInputIds(ids)));
        float[] Rotated(Phi2Native.Models.Modules.Linear projection) =>
            RotaryOp.Apply(ReshapeOp.Apply(projection.Forward(x), 1, time, heads, dim), Config.RotaryDim, Config.RopeTheta).ToSingleArray();
        float[] q = Rotated(attention.QProj), k = Rotated(attention.KProj);
        double sum = 0;
        int count = 0;
        for (int h = 0; h < heads; h++)
            for (int t = 1; t < time; t++)
            {
                var scores = new double[t + 1];
                for (int s = 0; s <= t; s++)
                    for (int d = 0; d < dim; d++) scores[s] += q[(t * heads + h) * dim + d] * k[(s * heads + h) * dim + d] / Math.Sqrt(dim);
                double top = scores.Max(), total = scores.Sum(v => Math.Exp(v - top));
                sum += 1 / total;   // the largest weight: exp(top - top) / total
                count++;
            }
        return sum / count;
    }

    [Test]
    public void TheScaledWeightsMakeAttentionSharpWhereRandomOnesAreNearlyUniform()
    {
        using var sharp = SharpModel(CpuBackend.Default);
        using var plain = SharpModel(CpuBackend.Default, sharpness: 1);
        double sharpWeight = MeanLargestAttentionWeight(sharp, Rows[0]), plainWeight = MeanLargestAttentionWeight(plain, Rows[0]);
        TestContext.Out.WriteLine($"mean largest attention weight: sharp {sharpWeight:F3}, random {plainWeight:F3}");
        Assert.That(sharpWeight, Is.GreaterThan(0.8));
        Assert.That(plainWeight, Is.LessThan(0.4), "a query over 2..12 keys: near-uniform weights");
    }

    private static float[] FullLastLogits(Phi2Model model, int[] ids)
    {
        using var scope = TensorScope.Begin();
        float[] logits = model.Forward(model.CreateInputIds(ids)).ToSingleArray();
        return logits[^Config.VocabSize..];
    }

    /// <summary>Equal-length rows: a prefill of 3, then one token per step at the shared position; each step against the full forward.</summary>
    private static void SharedPositionsMatchFullForwards(IBackend backend)
    {
        using var model = SharpModel(backend);
        int batch = Rows.Length, vocab = Config.VocabSize, prompt = 3, total = Rows[0].Length;
        using var cache = new KeyValueCache(model, batch, total);
        for (int t = prompt - 1; t < total; t++)
        {
            float[] step;
            using (TensorScope.Begin())
            {
                var ids = t == prompt - 1 ? Rows.SelectMany(r => r.Take(prompt)).ToArray() : Rows.Select(r => r[t]).ToArray();
                step = model.ForwardLast(model.CreateInputIds(ids, batch), cache).ToSingleArray();   // [B, 1, V]
            }
            for (int b = 0; b < batch; b++)
                TensorAssert.Close($"row {b}, position {t}", FullLastLogits(model, Rows[b][..(t + 1)]), step.AsSpan(b * vocab, vocab), Tolerance.Forward(DType.F32));
        }
    }

    /// <summary>Rows of 7 and 3 prompt tokens, right-padded in one prefill, then each row decoding at its own position.</summary>
    private static void PerRowPositionsMatchFullForwards(IBackend backend)
    {
        using var model = SharpModel(backend);
        int batch = Rows.Length, vocab = Config.VocabSize;
        int[] prompts = [7, 3];
        using var cache = new KeyValueCache(model, batch, Rows[0].Length);
        float[] logits;
        using (TensorScope.Begin())
        {
            int[] padded = [.. Rows[0].Take(7), .. Rows[1].Take(3), 36, 36, 36, 36];
            logits = model.Forward(model.CreateInputIds(padded, batch), cache, [prompts[0] - 1, prompts[1] - 1]).ToSingleArray();
        }
        cache.Truncate(1, prompts[1]);
        for (int step = 0; ; step++)
        {
            for (int b = 0; b < batch; b++)
            {
                int position = prompts[b] + step - 1;
                TensorAssert.Close($"row {b}, position {position}", FullLastLogits(model, Rows[b][..(position + 1)]), logits.AsSpan(b * vocab, vocab),
                    Tolerance.Forward(DType.F32));
            }
            if (prompts[0] + step == Rows[0].Length) break;
            using (TensorScope.Begin())
                logits = model.ForwardLast(model.CreateInputIds([Rows[0][prompts[0] + step], Rows[1][prompts[1] + step]], batch), cache).ToSingleArray();
        }
    }

    [Test]
    public void OnTheCpuEachDecodeStepEqualsAFullForward()
    {
        SharedPositionsMatchFullForwards(CpuBackend.Default);
        PerRowPositionsMatchFullForwards(CpuBackend.Default);
    }

    [Test, Category("Emulated")]
    public void OnTheEmulatedDeviceEachDecodeStepEqualsAFullForward()
    {
        using var device = new EmulatedDevice();
        using var cuda = new CudaBackend(device, ownsDevice: false);
        SharedPositionsMatchFullForwards(cuda);
        PerRowPositionsMatchFullForwards(cuda);
    }

    [Test]
    public void GeneratedTokensEqualTheArgmaxOfFullForwards()
    {
        using var model = SharpModel(CpuBackend.Default);
        int[][] prompts = [Rows[0][..5], Rows[1][..2]];
        var options = new GenerationOptions { MaxNewTokens = 8, StopAtEndOfText = false };
        var batch = new Generator(model).GenerateBatch(prompts, options);
        for (int r = 0; r < prompts.Length; r++)
        {
            var sequence = prompts[r].ToList();
            while (sequence.Count < prompts[r].Length + 8) sequence.Add(Sampler.ArgMax(FullLastLogits(model, [.. sequence])));
            Assert.That(batch[r].Tokens, Is.EqualTo(sequence.Skip(prompts[r].Length)), $"row {r} in a batch");
            Assert.That(new Generator(model).Generate(prompts[r], options).Tokens, Is.EqualTo(batch[r].Tokens), $"row {r} alone");
        }
    }
}
