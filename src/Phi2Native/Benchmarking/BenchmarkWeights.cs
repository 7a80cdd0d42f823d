using System.Runtime.InteropServices;
using Phi2Native.Models.Modules;
using Phi2Native.Tensors;

namespace Phi2Native.Benchmarking;

/// <summary>
/// Random weights made fast at any size, for timing: each Linear and Embedding weight tiles a 64 Ki-value pattern of
/// normal(0, 0.02) draws from a random offset, biases are zero and LayerNorm weights one. Drawing every value
/// (<see cref="RandomWeights"/>, HF's initialization) takes about a minute for Phi-2's 2.7 B parameters; this takes
/// the time of the copies. The values are as good as random for timing: nothing here depends on them, and a random
/// model's loss still sits near ln V.
/// </summary>
internal static class BenchmarkWeights
{
    private const int PatternLength = 1 << 16;

    /// <summary>A weight source storing each tensor on <paramref name="backend"/> in <paramref name="dtype"/>.</summary>
    public static WeightSource Tiled(IBackend backend, int seed, DType dtype)
    {
        var random = new Random(seed);
        var pattern = new float[PatternLength];
        for (int i = 0; i < pattern.Length; i++) pattern[i] = (float)(0.02 * RandomWeights.Gaussian(random));
        return (name, shape) =>
        {
            var values = new float[Tensor.CountElements(shape)];
            if (name.EndsWith(".weight", StringComparison.Ordinal))
            {
                // A LayerNorm is known by its name (input_layernorm, final_layernorm): the source sees names and shapes only.
                if (name.Contains("layernorm", StringComparison.Ordinal)) values.AsSpan().Fill(1f);
                else Tile(pattern, random.Next(PatternLength), values);
            }
            return backend.FromBytes(MemoryMarshal.AsBytes(values.AsSpan()), DType.F32, shape, dtype);
        };
    }

    private static void Tile(float[] pattern, int offset, Span<float> destination)
    {
        ReadOnlySpan<float> source = pattern.AsSpan(offset);
        while (destination.Length > 0)
        {
            int n = Math.Min(destination.Length, source.Length);
            source[..n].CopyTo(destination);
            destination = destination[n..];
            source = pattern;
        }
    }
}
