using System.Globalization;

namespace Phi2Native.Bench;

/// <summary>One benchmarked product: C[M, N] = op(A)[M, K] . op(B)[K, N], or <see cref="Batch"/> of them.</summary>
/// <param name="TransposeA">A stored [K, M] instead of [M, K].</param>
/// <param name="TransposeB">B stored [N, K] instead of [K, N] (a Linear weight [out, in]).</param>
/// <param name="Batch">Independent products of this shape (strided-batched, matrices stored back to back).</param>
internal sealed record GemmShape(int M, int N, int K, bool TransposeA, bool TransposeB, int Batch = 1)
{
    /// <summary>
    /// Phi-2's products for a 512-token sequence (hidden 2560, intermediate 10240, 32 heads of 80;
    /// weights [out, in], so forward is x . W^T), two backward products, attention per head, then
    /// square references.
    /// </summary>
    public static readonly string DefaultList =
        "512x2560x2560:NT," +   // q/k/v/dense forward: x[512, 2560] . W[2560, 2560]^T
        "512x10240x2560:NT," +  // fc1 forward
        "512x2560x10240:NT," +  // fc2 forward
        "512x2560x10240:NN," +  // fc1 backward to the input: dY[512, 10240] . W1[10240, 2560]
        "10240x2560x512:TN," +  // fc1 weight gradient: dY^T[10240, 512] . X[512, 2560], dY stored [512, 10240]
        "32*512x512x80:NT," +   // attention scores per head: q[512, 80] . k[512, 80]^T
        "32*512x80x512:NN," +   // attention output per head: p[512, 512] . v[512, 80]
        "1024x1024x1024:NN," +
        "2048x2048x2048:NN";

    /// <summary>2 M N K per product, times the batch.</summary>
    public double Flops => 2.0 * M * N * K * Batch;

    /// <summary>"NT" style: N = as stored, T = transposed, for A then B.</summary>
    public string Ops => $"{(TransposeA ? 'T' : 'N')}{(TransposeB ? 'T' : 'N')}";

    public override string ToString() => Batch == 1 ? $"{M}x{N}x{K}" : $"{Batch}*{M}x{N}x{K}";

    /// <summary>Parses "[B*]MxNxK[:TT]" (batch, transposes of A and B); a comma-separated list gives several.</summary>
    public static IReadOnlyList<GemmShape> ParseList(string text)
        => text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(Parse).ToList();

    private static GemmShape Parse(string text)
    {
        string[] parts = text.Split(':');
        string[] batchAndDims = parts[0].Split('*');
        string[] dims = batchAndDims[^1].Split('x');
        string ops = parts.Length > 1 ? parts[1].ToUpperInvariant() : "NT";
        if (parts.Length > 2 || batchAndDims.Length > 2 || dims.Length != 3 || ops.Length != 2 || ops.Any(ch => ch is not ('N' or 'T')))
            throw new ArgumentException($"bad shape '{text}': expected [B*]MxNxK[:TT] with T/N for A and B");
        int[] v = dims.Append(batchAndDims.Length == 2 ? batchAndDims[0] : "1").Select(d => int.TryParse(d, CultureInfo.InvariantCulture, out int x) && x > 0
            ? x : throw new ArgumentException($"bad number '{d}' in shape '{text}'")).ToArray();
        return new GemmShape(v[0], v[1], v[2], ops[0] == 'T', ops[1] == 'T', v[3]);
    }
}
