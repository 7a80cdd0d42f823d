using NUnit.Framework;
using Phi2Native.Autograd;
using Phi2Native.Autograd.Ops;
using Phi2Native.Backends.Ops.Embeddings;
using Phi2Native.Backends.Ops.Loss;
using Phi2Native.Backends.Ops.Projection;
using Phi2Native.Tensors;

using static Phi2Native.Tests.Support.GradientCheck;
namespace Phi2Native.Tests.Autograd;

/// <summary>
/// Parameter gradients accumulate (+=) across backward passes on the CPU backend, which writes them straight into
/// parameter.Grad (Linear's weight and bias, Embedding's weight): two passes over batches A then B leave grad(A) +
/// grad(B), each taken from a fresh single pass, and the same batch twice leaves twice one pass (up to the order of the additions). Until now only
/// the CPU-vs-CUDA comparisons would have noticed an overwrite, and only on the CUDA side.
/// </summary>
[TestFixture]
public class GradientAccumulationTests
{
    private static void Backward(Func<Tensor> loss)
    {
        using var scope = TensorScope.Begin();
        using var tape = GradientTape.Begin();
        tape.Backward(loss());
    }

    private static double[] Gradient(Tensor parameter) => parameter.Grad!.ToDoubleArray();

    /// <summary>Random values in <paramref name="dtype"/> (F64, or F32: the CPU backend's two compute paths).</summary>
    private static Tensor Values(Random random, int[] shape, DType dtype, bool requiresGrad)
    {
        using var wide = Random(random, shape, requiresGrad: false);
        var tensor = dtype == DType.F64 ? Backend.Cast(wide, DType.F64) : Backend.Cast(wide, DType.F32);
        TensorScope.Detach(tensor);
        tensor.RequiresGrad = requiresGrad;
        return tensor;
    }

    private static void AssertAccumulates(Tensor[] parameters, Func<Tensor> lossA, Func<Tensor> lossB)
    {
        double within = parameters[0].DType == DType.F64 ? 1e-12 : 1e-5;
        void Zero() { foreach (var p in parameters) p.ZeroGrad(); }
        Zero();
        Backward(lossA);
        var a = parameters.Select(Gradient).ToArray();
        Zero();
        Backward(lossB);
        var b = parameters.Select(Gradient).ToArray();
        Assert.That(a.Zip(b).All(pair => !pair.First.SequenceEqual(pair.Second)), Is.True, "the two batches give different gradients");

        Zero();
        Backward(lossA);
        Backward(lossB);
        for (int i = 0; i < parameters.Length; i++)
        {
            double[] sum = Gradient(parameters[i]);
            Assert.That(sum, Is.EqualTo(a[i].Zip(b[i], (x, y) => x + y)).Within(within), $"{parameters[i].Name}: grad(A) + grad(B)");
        }
        Zero();
        Backward(lossA);
        Backward(lossA);
        for (int i = 0; i < parameters.Length; i++)
            Assert.That(Gradient(parameters[i]), Is.EqualTo(a[i].Select(x => 2 * x)).Within(within), $"{parameters[i].Name}: twice one pass");
    }

    [Test]
    public void LinearWeightAndBiasGradientsAccumulate([Values(DType.F64, DType.F32)] DType dtype)
    {
        var random = new Random(5);
        using Tensor weight = Values(random, [7, 13], dtype, true), bias = Values(random, [7], dtype, true);
        weight.Name = "weight";
        bias.Name = "bias";
        using Tensor xA = Values(random, [6, 13], dtype, false), xB = Values(random, [6, 13], dtype, false);
        using Tensor targets = Ids([0, 3, 6, 2, 2, 5], 6);
        AssertAccumulates([weight, bias],
            () => CrossEntropyOp.Apply(LinearOp.Apply(xA, weight, bias), targets),
            () => CrossEntropyOp.Apply(LinearOp.Apply(xB, weight, bias), targets));
    }

    [Test]
    public void EmbeddingWeightGradientAccumulates([Values(DType.F64, DType.F32)] DType dtype)
    {
        var random = new Random(6);
        using Tensor weight = Values(random, [11, 5], dtype, true);
        weight.Name = "weight";
        // Rows 3 and 1 in both batches, row 3 twice within each: accumulation within a pass and across passes.
        using Tensor idsA = Ids([3, 0, 10, 3, 1], 5), idsB = Ids([1, 3, 7, 3, 4], 5), targets = Ids([1, 4, 0, 2, 3], 5);
        AssertAccumulates([weight],
            () => CrossEntropyOp.Apply(EmbeddingOp.Apply(weight, idsA), targets),
            () => CrossEntropyOp.Apply(EmbeddingOp.Apply(weight, idsB), targets));
    }
}
