using System.Globalization;

namespace Phi2Native.Bench;

/// <summary>One benchmarked product: C[M, N] = op(A)[M, K] . op(B)[K, N].</summary>
/// <param name="TransposeA">A stored [K, M] instead of [M, K].</param>
/// <param name="TransposeB">B stored [N, K] instead of [K, N] (a Linear weight [out, in]).</param>
internal sealed record GemmShape(int M, int N, int K, bool TransposeA, bool TransposeB)
{
    /// <summary>
    /// Phi-2's products for a 512-token batch (hidden 2560, intermediate 10240; weights [out, in], so
    /// forward is x . W^T), two backward products, then square references.
    /// </summary>
    public static readonly string DefaultList =
        "512x2560x2560:NT," +   // q/k/v/dense forward: [512, 2560] . W[2560, 2560]^T
        "512x10240x2560:NT," +  // fc1 forward
        "512x2560x10240:NT," +  // fc2 forward
        "512x2560x10240:NN," +  // fc1 backward to the input: dY[512, 10240] . W1[10240, 2560]
        "10240x2560x512:TN," +  // fc1 weight gradient: dY^T[10240, 512] . X[512, 2560], dY stored [512, 10240]
        "1024x1024x1024:NN," +
        "2048x2048x2048:NN";

    /// <summary>2 M N K.</summary>
    public double Flops => 2.0 * M * N * K;

    /// <summary>"NT" style: N = as stored, T = transposed, for A then B.</summary>
    public string Ops => $"{(TransposeA ? 'T' : 'N')}{(TransposeB ? 'T' : 'N')}";

    public override string ToString() => $"{M}x{N}x{K}";

    /// <summary>Parses "MxNxK" or "MxNxK:TT" (transposes of A, B); a comma-separated list gives several.</summary>
    public static IReadOnlyList<GemmShape> ParseList(string text)
        => text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(Parse).ToList();

    private static GemmShape Parse(string text)
    {
        string[] parts = text.Split(':');
        string[] dims = parts[0].Split('x');
        string ops = parts.Length > 1 ? parts[1].ToUpperInvariant() : "NT";
        if (parts.Length > 2 || dims.Length != 3 || ops.Length != 2 || ops.Any(ch => ch is not ('N' or 'T')))
            throw new ArgumentException($"bad shape '{text}': expected MxNxK or MxNxK:TT with T/N for A and B");
        int[] v = dims.Select(d => int.TryParse(d, CultureInfo.InvariantCulture, out int x) && x > 0
            ? x : throw new ArgumentException($"bad dimension '{d}' in shape '{text}'")).ToArray();
        return new GemmShape(v[0], v[1], v[2], ops[0] == 'T', ops[1] == 'T');
    }
}
