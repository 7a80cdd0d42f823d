// Causal scaled-dot-product attention (HF PhiAttention's core after rotary), flash-style memory:
// the [Tq,Tk] probability matrix is never stored; Forward keeps one row of scores per thread, and
// Backward rebuilds each probability from the saved log-sum-exp.
//
//   Forward(q [B,Tq,H,D], k [B,Tk,H,D], v [B,Tk,H,D], output [B,Tq,H,D], logSumExp [B,H,Tq])
//       query i sits at absolute position pos_i = Tk - Tq + i (Tq < Tk: the KV-cache case) and sees
//       keys j <= pos_i.  s_ij = (q_i . k_j) / sqrt(D);  lse_i = log sum_j exp(s_ij);
//       p_ij = exp(s_ij - lse_i);  output_i = sum_j p_ij v_j
//   Backward(dOutput, q, k, v, output, logSumExp, dq =, dk =, dv =, same dims)
//       delta_i = dOutput_i . output_i;  dp_ij = dOutput_i . v_j;  ds_ij = p_ij (dp_ij - delta_i)
//       dv_j = sum_i p_ij dOutput_i;  dq_i = scale sum_j ds_ij k_j;  dk_j = scale sum_i ds_ij q_i
//
// Backward needs q, k, v, output and logSumExp saved (O(B*T*H*D) + O(B*H*T) memory).
// Work is split over (b, h) pairs: each owns disjoint slices of every output, including the dk/dv
// rows it accumulates over queries, so no two threads write one element and the order is fixed.
using System.Buffers;
using System.Numerics;
using System.Numerics.Tensors;

namespace Phi2Native.Backends.Cpu;

internal static class CpuAttention
{
    /// <summary>Causal softmax(q k^T / sqrt(D)) v for every (batch, head).</summary>
    /// <param name="q">[B, Tq, H, D] queries.</param>
    /// <param name="k">[B, Tk, H, D] keys.</param>
    /// <param name="v">[B, Tk, H, D] values.</param>
    /// <param name="output">[B, Tq, H, D] attention output, overwritten.</param>
    /// <param name="logSumExp">[B, H, Tq] log-sum-exp of each query's scaled, masked scores; saved for backward.</param>
    /// <param name="batch">B.</param>
    /// <param name="queryTime">Tq.</param>
    /// <param name="keyTime">Tk &gt;= Tq; the last query sits at position Tk - 1.</param>
    /// <param name="heads">H.</param>
    /// <param name="headDim">D (&gt; 0).</param>
    /// <exception cref="ArgumentException">A span length does not match the dims.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A dim is out of range, or keyTime &lt; queryTime.</exception>
    public static unsafe void Forward<TFloat>(ReadOnlySpan<TFloat> q, ReadOnlySpan<TFloat> k, ReadOnlySpan<TFloat> v,
        Span<TFloat> output, Span<TFloat> logSumExp, int batch, int queryTime, int keyTime, int heads, int headDim)
        where TFloat : unmanaged, IFloatingPointIeee754<TFloat>
    {
        CheckDims(batch, queryTime, keyTime, heads, headDim);
        long qSize = (long)batch * queryTime * heads * headDim, kSize = (long)batch * keyTime * heads * headDim;
        CpuKernelSupport.Length(q.Length, qSize, nameof(q), "[B, Tq, H, D]");
        CpuKernelSupport.Length(k.Length, kSize, nameof(k), "[B, Tk, H, D]");
        CpuKernelSupport.Length(v.Length, kSize, nameof(v), "[B, Tk, H, D]");
        CpuKernelSupport.Length(output.Length, qSize, nameof(output), "[B, Tq, H, D]");
        CpuKernelSupport.Length(logSumExp.Length, (long)batch * heads * queryTime, nameof(logSumExp), "[B, H, Tq]");
        if (qSize == 0) return;

        TFloat scale = TFloat.One / TFloat.Sqrt(TFloat.CreateChecked(headDim));
        int pairs = batch * heads, rowStride = heads * headDim, firstPos = keyTime - queryTime;
        bool parallel = CpuKernelSupport.ShouldParallelize(pairs, qSize * keyTime);
        fixed (TFloat* pq = q, pk = k, pv = v, po = output, pl = logSumExp)
        {
            TFloat* qp = pq, kp = pk, vp = pv, op = po, lp = pl;
            CpuKernelSupport.For(pairs, parallel, pair =>
            {
                int b = pair / heads, h = pair % heads;
                TFloat* qBase = qp + ((long)b * queryTime * heads + h) * headDim;
                TFloat* oBase = op + ((long)b * queryTime * heads + h) * headDim;
                TFloat* kBase = kp + ((long)b * keyTime * heads + h) * headDim;
                TFloat* vBase = vp + ((long)b * keyTime * heads + h) * headDim;
                TFloat[] scoreArray = ArrayPool<TFloat>.Shared.Rent(keyTime);
                try
                {
                    for (int i = 0; i < queryTime; i++)
                    {
                        int count = firstPos + i + 1; // keys 0..pos_i
                        var qi = new ReadOnlySpan<TFloat>(qBase + (long)i * rowStride, headDim);
                        var oi = new Span<TFloat>(oBase + (long)i * rowStride, headDim);
                        Span<TFloat> s = scoreArray.AsSpan(0, count);
                        for (int j = 0; j < count; j++)
                            s[j] = TensorPrimitives.Dot(qi, new ReadOnlySpan<TFloat>(kBase + (long)j * rowStride, headDim)) * scale;
                        // Subtracting the max keeps every exp in (0, 1]: no overflow however large the scores.
                        TFloat max = TensorPrimitives.Max<TFloat>(s);
                        TensorPrimitives.Subtract(s, max, s);
                        TensorPrimitives.Exp<TFloat>(s, s);
                        TFloat sum = TensorPrimitives.Sum<TFloat>(s);
                        oi.Clear();
                        for (int j = 0; j < count; j++)
                            TensorPrimitives.MultiplyAdd(new ReadOnlySpan<TFloat>(vBase + (long)j * rowStride, headDim), s[j], oi, oi);
                        TensorPrimitives.Multiply<TFloat>(oi, TFloat.One / sum, oi);
                        lp[(long)pair * queryTime + i] = max + TFloat.Log(sum);
                    }
                }
                finally
                {
                    ArrayPool<TFloat>.Shared.Return(scoreArray);
                }
            });
        }
    }

    /// <summary>Gradients of <see cref="Forward"/>, recomputing probabilities from <paramref name="logSumExp"/>.</summary>
    /// <param name="dOutput">[B, Tq, H, D] gradient of the output.</param>
    /// <param name="q">[B, Tq, H, D] as in forward.</param>
    /// <param name="k">[B, Tk, H, D] as in forward.</param>
    /// <param name="v">[B, Tk, H, D] as in forward.</param>
    /// <param name="output">[B, Tq, H, D] saved forward output.</param>
    /// <param name="logSumExp">[B, H, Tq] saved by forward.</param>
    /// <param name="dq">[B, Tq, H, D] overwritten; empty when not needed.</param>
    /// <param name="dk">[B, Tk, H, D] overwritten; empty when not needed.</param>
    /// <param name="dv">[B, Tk, H, D] overwritten; empty when not needed.</param>
    /// <param name="batch">B.</param>
    /// <param name="queryTime">Tq.</param>
    /// <param name="keyTime">Tk &gt;= Tq.</param>
    /// <param name="heads">H.</param>
    /// <param name="headDim">D (&gt; 0).</param>
    /// <exception cref="ArgumentException">A span length does not match the dims.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A dim is out of range, or keyTime &lt; queryTime.</exception>
    public static unsafe void Backward<TFloat>(ReadOnlySpan<TFloat> dOutput, ReadOnlySpan<TFloat> q, ReadOnlySpan<TFloat> k,
        ReadOnlySpan<TFloat> v, ReadOnlySpan<TFloat> output, ReadOnlySpan<TFloat> logSumExp,
        Span<TFloat> dq, Span<TFloat> dk, Span<TFloat> dv, int batch, int queryTime, int keyTime, int heads, int headDim)
        where TFloat : unmanaged, IFloatingPointIeee754<TFloat>
    {
        CheckDims(batch, queryTime, keyTime, heads, headDim);
        long qSize = (long)batch * queryTime * heads * headDim, kSize = (long)batch * keyTime * heads * headDim;
        CpuKernelSupport.Length(dOutput.Length, qSize, nameof(dOutput), "[B, Tq, H, D]");
        CpuKernelSupport.Length(q.Length, qSize, nameof(q), "[B, Tq, H, D]");
        CpuKernelSupport.Length(k.Length, kSize, nameof(k), "[B, Tk, H, D]");
        CpuKernelSupport.Length(v.Length, kSize, nameof(v), "[B, Tk, H, D]");
        CpuKernelSupport.Length(output.Length, qSize, nameof(output), "[B, Tq, H, D]");
        CpuKernelSupport.Length(logSumExp.Length, (long)batch * heads * queryTime, nameof(logSumExp), "[B, H, Tq]");
        bool wantDq = CpuKernelSupport.OptionalLength(dq.Length, qSize, nameof(dq), "[B, Tq, H, D]");
        bool wantDk = CpuKernelSupport.OptionalLength(dk.Length, kSize, nameof(dk), "[B, Tk, H, D]");
        bool wantDv = CpuKernelSupport.OptionalLength(dv.Length, kSize, nameof(dv), "[B, Tk, H, D]");
        // Tq = 0 with Tk > 0: nothing attends, so dk and dv are zero.
        if (queryTime == 0)
        {
            dk.Clear();
            dv.Clear();
        }
        if (qSize == 0 || !(wantDq || wantDk || wantDv)) return;

        TFloat scale = TFloat.One / TFloat.Sqrt(TFloat.CreateChecked(headDim));
        int pairs = batch * heads, rowStride = heads * headDim, firstPos = keyTime - queryTime;
        bool wantDs = wantDq || wantDk; // dv alone needs only the probabilities
        bool parallel = CpuKernelSupport.ShouldParallelize(pairs, 3 * qSize * keyTime);
        fixed (TFloat* pdo = dOutput, pq = q, pk = k, pv = v, po = output, pl = logSumExp, pdq = dq, pdk = dk, pdv = dv)
        {
            TFloat* dop = pdo, qp = pq, kp = pk, vp = pv, op = po, lp = pl, dqp = pdq, dkp = pdk, dvp = pdv;
            CpuKernelSupport.For(pairs, parallel, pair =>
            {
                int b = pair / heads, h = pair % heads;
                long qOffset = ((long)b * queryTime * heads + h) * headDim;
                long kOffset = ((long)b * keyTime * heads + h) * headDim;
                // This pair's rows: zero the ones it accumulates into (the outputs are "=", not "+=").
                if (wantDq)
                    for (int i = 0; i < queryTime; i++) new Span<TFloat>(dqp + qOffset + (long)i * rowStride, headDim).Clear();
                for (int j = 0; j < keyTime; j++)
                {
                    if (wantDk) new Span<TFloat>(dkp + kOffset + (long)j * rowStride, headDim).Clear();
                    if (wantDv) new Span<TFloat>(dvp + kOffset + (long)j * rowStride, headDim).Clear();
                }
                TFloat[] probArray = ArrayPool<TFloat>.Shared.Rent(keyTime);
                try
                {
                    for (int i = 0; i < queryTime; i++)
                    {
                        int count = firstPos + i + 1;
                        long qRow = qOffset + (long)i * rowStride;
                        var qi = new ReadOnlySpan<TFloat>(qp + qRow, headDim);
                        var doi = new ReadOnlySpan<TFloat>(dop + qRow, headDim);
                        Span<TFloat> p = probArray.AsSpan(0, count);
                        for (int j = 0; j < count; j++)
                            p[j] = TensorPrimitives.Dot(qi, new ReadOnlySpan<TFloat>(kp + kOffset + (long)j * rowStride, headDim)) * scale;
                        // p = exp(s - lse) is the forward softmax (up to rounding) without its max and sum passes.
                        TensorPrimitives.Subtract(p, lp[(long)pair * queryTime + i], p);
                        TensorPrimitives.Exp<TFloat>(p, p);
                        TFloat delta = wantDs ? TensorPrimitives.Dot(doi, new ReadOnlySpan<TFloat>(op + qRow, headDim)) : TFloat.Zero;
                        for (int j = 0; j < count; j++)
                        {
                            long kRow = kOffset + (long)j * rowStride;
                            if (wantDv)
                            {
                                var dvj = new Span<TFloat>(dvp + kRow, headDim);
                                TensorPrimitives.MultiplyAdd(doi, p[j], dvj, dvj);
                            }
                            if (!wantDs) continue;
                            TFloat dp = TensorPrimitives.Dot(doi, new ReadOnlySpan<TFloat>(vp + kRow, headDim));
                            TFloat ds = p[j] * (dp - delta) * scale;
                            if (wantDq)
                            {
                                var dqi = new Span<TFloat>(dqp + qRow, headDim);
                                TensorPrimitives.MultiplyAdd(new ReadOnlySpan<TFloat>(kp + kRow, headDim), ds, dqi, dqi);
                            }
                            if (wantDk)
                            {
                                var dkj = new Span<TFloat>(dkp + kRow, headDim);
                                TensorPrimitives.MultiplyAdd(qi, ds, dkj, dkj);
                            }
                        }
                    }
                }
                finally
                {
                    ArrayPool<TFloat>.Shared.Return(probArray);
                }
            });
        }
    }

    private static void CheckDims(int batch, int queryTime, int keyTime, int heads, int headDim)
    {
        CpuKernelSupport.NonNegative(batch, nameof(batch));
        CpuKernelSupport.NonNegative(queryTime, nameof(queryTime));
        CpuKernelSupport.NonNegative(heads, nameof(heads));
        CpuKernelSupport.Positive(headDim, nameof(headDim));
        if (keyTime < queryTime)
            throw new ArgumentOutOfRangeException(nameof(keyTime), keyTime,
                $"keyTime must be >= queryTime ({queryTime}): query i sits at position keyTime - queryTime + i.");
    }
}
