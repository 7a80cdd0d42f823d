using NUnit.Framework;
using Phi2Native.Autograd.Ops;
using Phi2Native.Backends.Ops.Activation;
using Phi2Native.Backends.Ops.Attention;
using Phi2Native.Backends.Ops.Dropout;
using Phi2Native.Backends.Ops.Embeddings;
using Phi2Native.Backends.Ops.Loss;
using Phi2Native.Backends.Ops.Mlp;
using Phi2Native.Backends.Ops.Normalization;
using Phi2Native.Backends.Ops.Projection;
using Phi2Native.Backends.Ops.Qkv;
using Phi2Native.Backends.Ops.Lora;
using Phi2Native.Backends.Ops.Residual;
using Phi2Native.Backends.Ops.Rotary;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

using static Phi2Native.Tests.Support.GradientCheck;
namespace Phi2Native.Tests.Autograd;

/// <summary>A finite-difference gradient check in double precision for every differentiable op, at odd sizes.</summary>
[TestFixture]
public class OpGradientTests
{
    private readonly Random _random = new(20261128);
    private readonly List<Tensor> _owned = new();

    private Tensor Input(string name, int[] shape, double scale = 1, bool requiresGrad = true)
    {
        var tensor = Random(_random, shape, scale, requiresGrad);
        tensor.Name = name;
        _owned.Add(tensor);
        return tensor;
    }

    [TearDown]
    public void TearDown()
    {
        foreach (var tensor in _owned) tensor.Dispose();
        _owned.Clear();
    }

    [Test]
    public void Embedding()
    {
        var weight = Input("weight", [11, 5]);
        var ids = Ids([3, 0, 10, 3, 7, 3], 2, 3);   // repeated ids accumulate
        Check("Embedding", () => EmbeddingOp.Apply(weight, ids), [weight]);
        ids.Dispose();
    }

    [Test]
    public void LayerNorm()
    {
        var x = Input("x", [3, 4, 37], 2);
        var weight = Input("weight", [37]);
        var bias = Input("bias", [37]);
        Check("LayerNorm", () => LayerNormOp.Apply(x, weight, bias, 1e-5), [x, weight, bias]);
    }

    [Test]
    public void LinearWithAndWithoutBias()
    {
        var x = Input("x", [2, 3, 13]);
        var weight = Input("weight", [7, 13]);
        var bias = Input("bias", [7]);
        Check("Linear", () => LinearOp.Apply(x, weight, bias), [x, weight, bias]);
        Check("Linear without bias", () => LinearOp.Apply(x, weight, null), [x, weight]);
    }

    [Test]
    public void LinearOnlyWhereGradientsAreNeeded()
    {
        var x = Input("x", [5, 6], requiresGrad: false);
        var weight = Input("weight", [4, 6]);
        var bias = Input("bias", [4], requiresGrad: false);
        Check("Linear, frozen x and bias", () => LinearOp.Apply(x, weight, bias), [weight]);
        Assert.That(x.Grad, Is.Null);
        Assert.That(bias.Grad, Is.Null);
    }

    [TestCase(12, 0)]
    [TestCase(30, 5)]
    [TestCase(0, 0)]
    public void RotaryPartialHalfSplit(int rotaryDim, int positionOffset)
    {
        var x = Input("x", [2, 5, 3, 30]);
        // Every row at the offset (0: no positions at all), and each row at its own.
        Check("Rotary", () => RotaryOp.Apply(x, rotaryDim, 500.0, positionOffset == 0 ? null : UniformPositions.Same(x.Backend, positionOffset, 2)), [x]);
        using var rows = x.Backend.FromBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(new[] { positionOffset, 7 }.AsSpan()), DType.I32, [2], DType.I32);
        Check("Rotary per row", () => RotaryOp.Apply(x, rotaryDim, 500.0, rows), [x]);
    }

    [TestCase(4, 0)]
    [TestCase(6, 9)]
    [TestCase(0, 0)]
    public void QkvProjection(int rotaryDim, int positionOffset)
    {
        const int heads = 2, headDim = 6, c = heads * headDim;
        var shape = new QkvShape(heads, headDim, rotaryDim, 500.0);
        var x = Input("x", [2, 3, c]);
        // Three separate weights (one GEMM each), and the model's layout: views of one [3C, C] weight and one [3C] bias.
        var separate = new QkvParameters([Input("wq", [c, c]), Input("wk", [c, c]), Input("wv", [c, c])], [Input("bq", [c]), Input("bk", [c]), Input("bv", [c])]);
        var fusedWeight = Input("w", [3 * c, c], requiresGrad: false);
        var fusedBias = Input("b", [3 * c], requiresGrad: false);
        Tensor View(Tensor fused, int j, int[] shape)
        {
            var view = fused.View(j * (fused.ElementCount / 3), shape);
            view.RequiresGrad = true;
            _owned.Add(view);
            return view;
        }
        var fused = new QkvParameters([View(fusedWeight, 0, [c, c]), View(fusedWeight, 1, [c, c]), View(fusedWeight, 2, [c, c])],
            [View(fusedBias, 0, [c]), View(fusedBias, 1, [c]), View(fusedBias, 2, [c])]);
        Assert.That(fused.WeightsFused && fused.BiasesFused && !separate.WeightsFused, "the views are one block, the separate weights are not");
        using var positions = positionOffset == 0 ? null
            : x.Backend.FromBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(new[] { positionOffset, 2 }.AsSpan()), DType.I32, [2], DType.I32);
        // q + 2 k - 3 v: a gradient landing in the wrong block changes the objective.
        Tensor Output(QkvParameters parameters)
        {
            var (q, k, v) = QkvProjectionOp.Apply(x, parameters, shape, positions);
            return AddOp.Apply(AddOp.Apply(q, ScaleOp.Apply(k, 2)), ScaleOp.Apply(v, -3));
        }
        Check("QkvProjection", () => Output(separate), [x, .. separate.Weights, .. separate.Biases]);
        Check("QkvProjection fused", () => Output(fused), [x, .. fused.Weights, .. fused.Biases]);
        Assert.That(fused.Weights[0].Grad!.Storage.Root, Is.SameAs(fused.Weights[2].Grad!.Storage.Root), "the weight gradients are views of one buffer");
        // Only k_proj's weight and v_proj's bias train: no other gradient appears.
        foreach (var parameter in fused.Weights.Concat(fused.Biases).Append(x))
        {
            parameter.RequiresGrad = false;
            parameter.ZeroGrad();
        }
        fused.Weights[1].RequiresGrad = true;
        fused.Biases[2].RequiresGrad = true;
        Check("QkvProjection, k weight and v bias only", () => Output(fused), [fused.Weights[1], fused.Biases[2]]);
        Assert.That(fused.Weights[0].Grad, Is.Null);
        Assert.That(x.Grad, Is.Null);
    }

    [TestCase(7, 7)]
    [TestCase(3, 8)]
    [TestCase(1, 1)]
    public void CausalAttention(int queryTime, int keyTime)
    {
        var q = Input("q", [2, queryTime, 3, 10]);
        var k = Input("k", [2, keyTime, 3, 10]);
        var v = Input("v", [2, keyTime, 3, 10]);
        Check("Attention", () => AttentionOp.Apply(q, k, v), [q, k, v]);
    }

    [Test]
    public void LinearGelu_FrozenWeightToo()
    {
        var x = Input("x", [2, 3, 13]);
        var weight = Input("weight", [9, 13], 0.5);
        var bias = Input("bias", [9]);
        Check("LinearGelu", () => LinearGeluOp.Apply(x, weight, bias), [x, weight, bias]);
        var frozen = Input("frozen weight", [9, 13], 0.5, requiresGrad: false);
        Check("LinearGelu, frozen weight", () => LinearGeluOp.Apply(x, frozen, bias), [x, bias]);
        Assert.That(frozen.Grad, Is.Null);
    }

    [Test]
    public void GeluNew()
    {
        var x = Input("x", [3, 41], 3);
        Check("GeluNew", () => GeluNewOp.Apply(x), [x]);
    }

    [Test]
    public void Dropout()
    {
        var x = Input("x", [4, 33]);
        Check("Dropout", () => DropoutOp.Apply(x, 0.3, 42), [x]);
    }

    [TestCase(0.0)]
    [TestCase(0.3)]
    public void ParallelResidual(double dropout)
    {
        var attention = Input("attention", [2, 3, 17], 1);
        var mlp = Input("mlp", [2, 3, 17], 2);
        var hidden = Input("hidden", [2, 3, 17], 3);
        Check("ParallelResidual", () => ParallelResidualOp.Apply(attention, mlp, hidden, dropout, 11, 12), [attention, mlp, hidden]);
    }

    [TestCase(0.0)]
    [TestCase(0.3)]
    public void LayerNormAndParallelResidualSharingTheirInput(double dropout)
    {
        // A decoder layer's shape: hidden feeds the LayerNorm (whose output feeds both branches) and the residual sum.
        // The residual runs backward first and leaves hidden's gradient pending; the LayerNorm adds its dx into it in place
        // (BackwardContext.PendingGradient, layernorm_backward's accumulate), so an overwrite shows as a wrong gradient.
        var hidden = Input("hidden", [2, 3, 17], 2);
        var weight = Input("weight", [17]);
        var bias = Input("bias", [17]);
        var projection = Input("W", [17, 17]);
        Check("LayerNorm + ParallelResidual", () =>
        {
            var normed = LayerNormOp.Apply(hidden, weight, bias, 1e-5);
            return ParallelResidualOp.Apply(LinearOp.Apply(normed, projection, null), GeluNewOp.Apply(normed), hidden, dropout, 11, 12);
        }, [hidden, weight, bias, projection]);
    }

    [TestCase(0.0)]
    [TestCase(0.3)]
    public void Lora(double dropout)
    {
        // x [2, 3, 11], base [2, 3, 7], A [4, 11], B [7, 4] (B non-zero, so A's gradient is too); scaling 1.5.
        var x = Input("x", [2, 3, 11]);
        var baseOutput = Input("base", [2, 3, 7]);
        var a = Input("A", [4, 11]);
        var b = Input("B", [7, 4]);
        Check("Lora", () => LoraOp.Apply(x, baseOutput, a, b, new LoraBranch(1.5, dropout, 13)), [x, baseOutput, a, b]);
    }

    [TestCase(0.0)]
    [TestCase(0.3)]
    public void LoraLinearGelu(double dropout)
    {
        // fc1 with LoRA and gelu_new as one op: x [2, 3, 11], W [7, 11], bias [7], A [4, 11], B [7, 4]; scaling 1.5.
        var x = Input("x", [2, 3, 11]);
        var weight = Input("W", [7, 11], 1);
        var bias = Input("bias", [7], 2);
        var a = Input("A", [4, 11], 3);
        var b = Input("B", [7, 4], 4);
        Check("LoraLinearGelu", () => LoraLinearGeluOp.Apply(x, weight, bias, a, b, new LoraBranch(1.5, dropout, 13)), [x, weight, bias, a, b]);
    }

    [TestCase(0.0)]
    [TestCase(0.3)]
    public void LoraLinearsSharingTheirInput(double dropout)
    {
        // Two LoRA Linears and a fused fc1 reading one x, as q, k, v and fc1 read one LayerNorm: every dx after the first
        // is added into x's pending gradient in place (BackwardContext.PendingGradient), so a wrong beta or a lost
        // accumulate shows here as a wrong gradient of x.
        var x = Input("x", [2, 3, 11]);
        var weight = Input("W", [7, 11], 1);
        var bias = Input("bias", [7], 2);
        var a = Input("A", [4, 11], 3);
        var b = Input("B", [7, 4], 4);
        var branch = new LoraBranch(0.5, dropout, 17);
        Check("Linear + Lora twice + LoraLinearGelu", () =>
        {
            var q = LoraOp.Apply(x, LinearOp.Apply(x, weight, bias), a, b, branch);
            var k = LoraOp.Apply(x, LinearOp.Apply(x, weight, null), a, b, branch with { Seed = 18 });
            return AddOp.Apply(AddOp.Apply(q, k), LoraLinearGeluOp.Apply(x, weight, bias, a, b, branch with { Seed = 19 }));
        }, [x, weight, bias, a, b]);
    }

    [TestCase(0.0, true, true, true)]
    [TestCase(0.3, true, false, true)]
    [TestCase(0.3, false, true, false)]
    public void LoraQkv(double dropout, bool q, bool k, bool v)
    {
        // x [2, 3, 5] feeds a fused [2, 3, 15] base (a Linear, so x's gradient also comes through the base) and the
        // present modules' branches: q r 2, k r 3, v r 1, scalings 1.5, 0.5, 2, a mask seed each.
        var x = Input("x", [2, 3, 5]);
        var weight = Input("W", [15, 5], 1);
        LoraQkvModule? Module(bool present, int m, int rank, double scaling) =>
            present ? new LoraQkvModule(Input($"A{m}", [rank, 5], 10 + m), Input($"B{m}", [5, rank], 20 + m), new LoraBranch(scaling, dropout, 30UL + (ulong)m)) : null;
        var (mq, mk, mv) = (Module(q, 0, 2, 1.5), Module(k, 1, 3, 0.5), Module(v, 2, 1, 2.0));
        Tensor[] inputs = [x, weight, .. new[] { mq, mk, mv }.Where(m => m is not null).SelectMany(m => new[] { m!.Value.A, m.Value.B })];
        Check("LoraQkv", () => LoraQkvOp.Apply(x, LinearOp.Apply(x, weight, null), mq, mk, mv), inputs);
    }

    [Test]
    public void ResidualAddOfATensorWithItself()
    {
        var a = Input("a", [3, 9]);
        var b = Input("b", [3, 9]);
        // a reaches the output twice: its gradient must be the sum of both paths.
        Check("Add", () => AddOp.Apply(AddOp.Apply(a, b), a), [a, b]);
    }

    [Test]
    public void TransposeAndScale()
    {
        var x = Input("x", [5, 7]);
        var w = Input("w", [3, 5]);
        // A non-square transpose feeding a product, so a wrong layout cannot pass by symmetry.
        Check("Transpose", () => LinearOp.Apply(TransposeOp.Apply(x), w, null), [x, w]);
        Check("Scale", () => ScaleOp.Apply(x, -2.5), [x]);
    }

    [Test]
    public void CrossEntropyWithIgnoredRows()
    {
        var logits = Input("logits", [6, 17], 3);
        var targets = Ids([4, -100, 16, 0, -100, 9], 6);
        Check("CrossEntropy", () => CrossEntropyOp.Apply(logits, targets), [logits]);
        targets.Dispose();
    }

    [Test]
    public void LinearCrossEntropyInChunks()
    {
        // 7 rows in chunks of 3 (the last one short), the chunk of rows 3 .. 5 scoring nothing: x, W and b all train.
        var x = Input("x", [7, 9], 2);
        var weight = Input("weight", [13, 9]);
        var bias = Input("bias", [13]);
        int[] targets = [4, 12, 0, -100, -100, -100, 7];
        Check("LinearCrossEntropy", () => LinearCrossEntropyOp.Apply(x, weight, bias, targets, chunkRows: 3), [x, weight, bias]);
        Check("LinearCrossEntropy, frozen head", () => LinearCrossEntropyOp.Apply(x, weight, null, targets, chunkRows: 2), [x]);
    }

    [Test]
    public void CrossEntropyOfLargeLogitsStaysFinite()
    {
        using var scope = TensorScope.Begin();
        var logits = Backend.FromBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(new[] { 1e4, -1e4, 0.0, 1e4 }.AsSpan()), DType.F64, [2, 2], DType.F64);
        var loss = CrossEntropyOp.Apply(logits, Ids([1, 0], 2));
        // Row 0: logsumexp(1e4, -1e4) - (-1e4) = 2e4; row 1: logsumexp(0, 1e4) - 0 = 1e4.
        Assert.That(loss.Item(), Is.EqualTo(1.5e4).Within(1e-6));
    }
}
