using Phi2Native.Tensors;

namespace Phi2Native.Models.Modules;

/// <summary>
/// Linears of one input whose weights are row blocks of one matrix and whose biases are blocks of one vector: a
/// layer's q_proj, k_proj and v_proj as one [3C, C] weight and one [3C] bias (one allocation each), so that one GEMM
/// computes all three (<c>QkvProjectionOp</c>). Each Linear keeps its HF name and its own tensors, which are views of
/// the fused ones (<see cref="Tensor.View"/>): freezing, LoRA, saving and merging see three ordinary Linears, and
/// writing through a view (a merge's W += scaling B A) writes the fused weight.
/// </summary>
internal static class LinearStack
{
    /// <summary>
    /// Loads the Linears named <paramref name="names"/> (each [out, in] with bias [out]) from <paramref name="weights"/>,
    /// in checkpoint order (q.weight, q.bias, k.weight, ...: a random source draws in the order asked), and moves each
    /// into its block of the fused weight and bias. The source has already converted each tensor to the compute dtype,
    /// once; the move is a copy in that dtype, and each source tensor is freed before the next is asked for.
    /// </summary>
    /// <exception cref="CheckpointException">A tensor has another shape, or the tensors differ in dtype or backend.</exception>
    public static Linear[] Load(WeightSource weights, IReadOnlyList<string> names, int inFeatures, int outFeatures)
    {
        int count = names.Count;
        Tensor? fusedWeight = null, fusedBias = null;
        var linears = new Linear[count];
        try
        {
            for (int i = 0; i < count; i++)
            {
                var weight = Place(weights, $"{names[i]}.weight", [outFeatures, inFeatures], ref fusedWeight, count, i);
                var bias = Place(weights, $"{names[i]}.bias", [outFeatures], ref fusedBias, count, i);
                linears[i] = new Linear(names[i], weight, bias);
            }
        }
        finally
        {
            // The views hold the memory now; the fused tensors themselves are reached through them (Tensor.Precedes).
            fusedWeight?.Dispose();
            fusedBias?.Dispose();
        }
        return linears;
    }

    /// <summary>Fetches one parameter, copies it into block <paramref name="index"/> of the fused tensor (made on the first), and gives the block's view.</summary>
    private static Tensor Place(WeightSource weights, string name, int[] shape, ref Tensor? fused, int count, int index)
    {
        using var part = weights(name, shape);
        if (!part.Shape.SequenceEqual(shape))
            throw new CheckpointException($"{name}: expected shape [{string.Join(", ", shape)}], got [{part.ShapeText}]");
        int[] fusedShape = [shape[0] * count, .. shape[1..]];
        fused ??= ShapeOnlyWeights.IsShapeOnly(part) ? ShapeOnlyWeights.Create(part.Backend, fusedShape) : part.Backend.Empty(fusedShape, part.DType);
        if (part.DType != fused.DType || part.Backend != fused.Backend)
            throw new CheckpointException($"{name}: {part.DType} on {part.Device}, but the tensors fused with it are {fused.DType} on {fused.Device}");
        var view = fused.View(index * part.ElementCount, shape);
        if (!ShapeOnlyWeights.IsShapeOnly(part)) part.Backend.Copy(part, view);
        view.Name = name;
        return view;
    }
}
