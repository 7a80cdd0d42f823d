using System.Runtime.InteropServices;
using Phi2Native.Tensors;

namespace Phi2Native.Models.Modules;

/// <summary>
/// HF's initialization of a fresh model (<c>PreTrainedModel._init_weights</c> with initializer_range 0.02): every Linear
/// and Embedding weight from normal(0, 0.02), biases zero, LayerNorm weights one; drawn from one System.Random in the
/// order the model asks for its parameters, so a seed names the same weights.
/// </summary>
internal static class RandomWeights
{
    /// <summary>A weight source of HF's initialization from <paramref name="seed"/>, storing each tensor on <paramref name="backend"/> in <paramref name="dtype"/>.</summary>
    public static WeightSource Initialize(IBackend backend, int seed, DType dtype)
    {
        var random = new Random(seed);
        return (name, shape) =>
        {
            var values = new float[Tensor.CountElements(shape)];
            // A LayerNorm is known by its name (input_layernorm, final_layernorm): the source sees names and shapes only.
            bool layerNorm = name.Contains("layernorm", StringComparison.Ordinal);
            if (name.EndsWith(".weight", StringComparison.Ordinal))
            {
                if (layerNorm) values.AsSpan().Fill(1f);
                else for (int i = 0; i < values.Length; i++) values[i] = (float)(0.02 * Gaussian(random));
            }
            return backend.FromBytes(MemoryMarshal.AsBytes(values.AsSpan()), DType.F32, shape, dtype);
        };
    }

    /// <summary>A standard normal draw by Box-Muller (two uniform draws; 1 - NextDouble() avoids log(0)).</summary>
    public static double Gaussian(Random random) =>
        Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());
}
