// The obvious causal attention in double, with the full [Tq, Tk] score matrix per (batch, head): the
// reference the blocked CpuAttention is checked against where finite differences would be too slow.
// Layouts as in CpuAttention: q, output [B, Tq, H, D]; k, v [B, Tk, H, D]; lse [B, H, Tq].
namespace Phi2Native.Tests.Backends.Cpu;

internal static class AttentionReference
{
    /// <summary>Output and log-sum-exp: mask, max-subtracted softmax, P V.</summary>
    public static (double[] Output, double[] Lse) Forward(double[] q, double[] k, double[] v,
        int batch, int tq, int tk, int heads, int d)
    {
        var output = new double[batch * tq * heads * d];
        var lse = new double[batch * heads * tq];
        for (int b = 0; b < batch; b++)
        for (int h = 0; h < heads; h++)
        {
            double[,] p = Probabilities(q, k, b, h, tq, tk, heads, d, lse);
            for (int i = 0; i < tq; i++)
            for (int j = 0; j < tk; j++)
            for (int c = 0; c < d; c++)
                output[((b * tq + i) * heads + h) * d + c] += p[i, j] * v[((b * tk + j) * heads + h) * d + c];
        }
        return (output, lse);
    }

    /// <summary>dq, dk, dv for the upstream gradient dOutput, straight from the formulas in CpuAttention's header
    /// (delta from the reference's own output).</summary>
    public static (double[] Dq, double[] Dk, double[] Dv) Backward(double[] dOutput, double[] q, double[] k, double[] v,
        int batch, int tq, int tk, int heads, int d)
    {
        var (output, _) = Forward(q, k, v, batch, tq, tk, heads, d);
        var dq = new double[q.Length];
        var dk = new double[k.Length];
        var dv = new double[v.Length];
        var lse = new double[batch * heads * tq];
        double scale = 1.0 / Math.Sqrt(d);
        for (int b = 0; b < batch; b++)
        for (int h = 0; h < heads; h++)
        {
            double[,] p = Probabilities(q, k, b, h, tq, tk, heads, d, lse);
            for (int i = 0; i < tq; i++)
            {
                int qi = ((b * tq + i) * heads + h) * d;
                double delta = 0;
                for (int c = 0; c < d; c++) delta += dOutput[qi + c] * output[qi + c];
                for (int j = 0; j < tk; j++)
                {
                    int kj = ((b * tk + j) * heads + h) * d;
                    double dp = 0;
                    for (int c = 0; c < d; c++) dp += dOutput[qi + c] * v[kj + c];
                    double ds = p[i, j] * (dp - delta) * scale;
                    for (int c = 0; c < d; c++)
                    {
                        dv[kj + c] += p[i, j] * dOutput[qi + c];
                        dq[qi + c] += ds * k[kj + c];
                        dk[kj + c] += ds * q[qi + c];
                    }
                }
            }
        }
        return (dq, dk, dv);
    }

    /// <summary>p [Tq, Tk] of one (b, h): masked entries are exactly 0; writes that pair's lse.</summary>
    private static double[,] Probabilities(double[] q, double[] k, int b, int h, int tq, int tk, int heads, int d, double[] lse)
    {
        double scale = 1.0 / Math.Sqrt(d);
        var p = new double[tq, tk];
        for (int i = 0; i < tq; i++)
        {
            double max = double.NegativeInfinity;
            for (int j = 0; j < tk; j++)
            {
                double s = 0;
                for (int c = 0; c < d; c++)
                    s += q[((b * tq + i) * heads + h) * d + c] * k[((b * tk + j) * heads + h) * d + c];
                p[i, j] = j <= tk - tq + i ? s * scale : double.NegativeInfinity;
                max = Math.Max(max, p[i, j]);
            }
            double sum = 0;
            for (int j = 0; j < tk; j++) sum += Math.Exp(p[i, j] - max);
            double logSum = max + Math.Log(sum);
            lse[(b * heads + h) * tq + i] = logSum;
            for (int j = 0; j < tk; j++) p[i, j] = Math.Exp(p[i, j] - logSum);
        }
        return p;
    }
}
