// Causal scaled-dot-product attention (HF PhiAttention's core after rotary), flash-style memory:
// nothing of size [Tq,Tk] outlives a call. Forward saves only the log-sum-exp of each query; Backward
// rebuilds the probabilities from it.
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
//
// How it runs: per (b, h) pair, queries in blocks of BlockRows rows, every product a CpuGemm call on
// the head's rows in place (head h of batch b is a [T, D] matrix with row stride H*D starting at
// element (b*T*H + h)*D, so no copies). A block of `rows` queries starting at i0 sees keys
// 0 .. Tk - Tq + i0 + rows - 1 (`keys` of them); the products cover that rectangle and the block's
// own upper triangle is masked out row by row (p = 0 there).
//
//   forward, per block:   S [rows, keys] = scale Q_blk K^T        row softmax of the visible part, lse
//                         (a block of 1 or 2 rows, e.g. a decode step, uses dot products instead: DirectRows)
//                         O_blk [rows, D] = P V, then each row scaled by 1 / its exp-sum
//   backward, per block:  P = exp(scale Q_blk K^T - lse)           (the forward's S, recomputed)
//                         dV[0:keys] += P^T dO_blk
//                         dP [rows, keys] = dO_blk V^T;  dS = scale P (dP - delta)
//                         dQ_blk = dS K[0:keys];  dK[0:keys] += dS^T Q_blk
//
// The only temporaries are S and dP of one block, rented per pair: BlockRows x Tk elements each, with
// BlockRows at most 128 (1 MB each for float at Tk = 2048) and fewer rows for longer keys, so that a
// block stays near 2^18 elements however long the sequence. Threads: many pairs run in parallel, each with
// single-threaded products; few pairs with large products run one after another and let CpuGemm
// split each product. Either way the result does not depend on thread scheduling: every element is
// computed by the same sequence of operations whichever thread runs it, and dk / dv accumulate over
// query blocks in a fixed order. It does not even depend on the threading path (a test checks it bit
// for bit): every product has beta = 0 or alpha = beta = 1 (scale is folded into dS), for which
// CpuGemm's full and edge tiles round alike, given D <= 256 (one k block; Phi-2's D is 80).
using System.Buffers;
using System.Numerics;
using Phi2Native.Backends.Cpu;
using Phi2Native.Tensors;

using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
namespace Phi2Native.Backends.Ops.Attention;

/// <summary>How <see cref="CpuAttention"/> uses threads (a test hook; production calls use <see cref="Auto"/>).</summary>
internal enum AttentionParallelism
{
    /// <summary><see cref="Pairs"/> for many pairs or small products, else <see cref="Gemm"/>.</summary>
    Auto,
    /// <summary>(batch, head) pairs spread over the threads; every product single-threaded.</summary>
    Pairs,
    /// <summary>Pairs one after another; each product may use every thread (above CpuGemm's threshold).</summary>
    Gemm,
}

internal static class CpuAttention
{
    /// <summary><see cref="AttentionOp.Forward"/> on the CPU backend, the contract checked.</summary>
    public static Tensor Forward(CpuBackend cpu, Tensor q, Tensor k, Tensor v, AttentionShape shape, out Tensor logSumExp)
    {
        var (batch, queryTime, keyTime, heads, headDim) = shape;
        var output = cpu.Allocate(q.Shape, q.DType);
        logSumExp = cpu.Allocate([batch, heads, queryTime], q.DType);
        if (q.DType == DType.F64)
            Forward(CpuBackend.Span<double>(q), CpuBackend.Span<double>(k), CpuBackend.Span<double>(v), CpuBackend.Span<double>(output),
                CpuBackend.Span<double>(logSumExp), batch, queryTime, keyTime, heads, headDim);
        else
            Forward(CpuBackend.Span<float>(q), CpuBackend.Span<float>(k), CpuBackend.Span<float>(v), CpuBackend.Span<float>(output),
                CpuBackend.Span<float>(logSumExp), batch, queryTime, keyTime, heads, headDim);
        return output;
    }

    /// <summary><see cref="AttentionOp"/>'s backward on the CPU backend, the contract checked.</summary>
    public static void Backward(Tensor dOutput, Tensor q, Tensor k, Tensor v, Tensor output, Tensor logSumExp, Tensor? dq, Tensor? dk, Tensor? dv,
        AttentionShape shape)
    {
        var (batch, queryTime, keyTime, heads, headDim) = shape;
        if (q.DType == DType.F64)
            Backward(CpuBackend.Span<double>(dOutput), CpuBackend.Span<double>(q), CpuBackend.Span<double>(k), CpuBackend.Span<double>(v),
                CpuBackend.Span<double>(output), CpuBackend.Span<double>(logSumExp), CpuBackend.Optional<double>(dq), CpuBackend.Optional<double>(dk),
                CpuBackend.Optional<double>(dv), batch, queryTime, keyTime, heads, headDim);
        else
            Backward(CpuBackend.Span<float>(dOutput), CpuBackend.Span<float>(q), CpuBackend.Span<float>(k), CpuBackend.Span<float>(v),
                CpuBackend.Span<float>(output), CpuBackend.Span<float>(logSumExp), CpuBackend.Optional<float>(dq), CpuBackend.Optional<float>(dk),
                CpuBackend.Optional<float>(dv), batch, queryTime, keyTime, heads, headDim);
    }

    /// <summary>
    /// <see cref="AttentionOp.Cached"/> on the CPU backend, the contract checked: batch row b runs the plain kernel on its
    /// own slices with its own key time, so it gets bit for bit what it gets alone (batched generation relies on it).
    /// </summary>
    public static Tensor Cached(CpuBackend cpu, Tensor q, Tensor keyCache, Tensor valueCache, Tensor keyTimes, AttentionShape shape)
    {
        var (batch, queryTime, capacity, heads, headDim) = shape;
        var times = CpuBackend.Span<int>(keyTimes);
        for (int b = 0; b < batch; b++)
            if (times[b] < queryTime || times[b] > capacity)
                throw new ArgumentOutOfRangeException(nameof(keyTimes), times[b], $"CachedAttention: row {b}'s key time must be in [Tq = {queryTime}, Tmax = {capacity}]");
        var output = cpu.Allocate(q.Shape, q.DType);
        // The log-sum-exp is only needed for backward, which a cache never runs: scratch, freed here.
        using var logSumExp = cpu.Allocate([1, heads, queryTime], q.DType);
        TensorScope.Detach(logSumExp);
        int queryRow = queryTime * heads * headDim, cacheRow = capacity * heads * headDim;
        for (int b = 0; b < batch; b++)
        {
            if (q.DType == DType.F64)
                ForwardCached<double>(CpuBackend.Span<double>(q).Slice(b * queryRow, queryRow), CpuBackend.Span<double>(keyCache).Slice(b * cacheRow, cacheRow),
                    CpuBackend.Span<double>(valueCache).Slice(b * cacheRow, cacheRow), CpuBackend.Span<double>(output).Slice(b * queryRow, queryRow),
                    CpuBackend.Span<double>(logSumExp), 1, queryTime, times[b], capacity, heads, headDim);
            else
                ForwardCached<float>(CpuBackend.Span<float>(q).Slice(b * queryRow, queryRow), CpuBackend.Span<float>(keyCache).Slice(b * cacheRow, cacheRow),
                    CpuBackend.Span<float>(valueCache).Slice(b * cacheRow, cacheRow), CpuBackend.Span<float>(output).Slice(b * queryRow, queryRow),
                    CpuBackend.Span<float>(logSumExp), 1, queryTime, times[b], capacity, heads, headDim);
        }
        return output;
    }

    /// <summary>
    /// Query rows per block when the caller does not choose: 128 from Tq = 512 on; a quarter of a shorter
    /// sequence (a multiple of 16, at least 32). A block computes, then masks, its own upper triangle: that
    /// wastes rows / (2 Tk) of the scores (3% at Tk = 2048, but half at T = 128 in one block), while fewer
    /// rows make the products thinner (K and V are packed once per block) and the row loops longer.
    /// Measured on Zen 4, one core: T = 128 and 256 run 10-15% faster in 32-48-row blocks than in one
    /// 128-row block; T = 2048 is 5% faster with 128 rows than with 48 or 64, and flat up to 256.
    /// </summary>
    /// <param name="queryTime">Tq (&gt;= 0).</param>
    internal static int DefaultQueryBlock(int queryTime) => Math.Min(128, Math.Max(32, (queryTime + 63) / 64 * 16));

    /// <summary>Cap on a block's [rows, Tk] temporaries: beyond Tk = 2^18 / 128 = 2048 the blocks get fewer
    /// rows (at least MinBlockRows), so memory stays bounded for any sequence length.</summary>
    private const int MaxBlockElements = 1 << 18;

    /// <summary>Fewest rows the cap makes a block (thinner products lose more to packing than they save).</summary>
    private const int MinBlockRows = 8;

    /// <summary>
    /// Forward blocks of at most this many queries (a decode step: Tq = 1) skip the products: a GEMM packs
    /// all of K and V (two copies of `keys` x D) to use them for one or two rows, which costs about 2.5x
    /// a dot product per key and query (measured at Tk = 128..512, H = 32, D = 80).
    /// </summary>
    internal const int DirectRows = 2;

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
    public static void Forward<TFloat>(ReadOnlySpan<TFloat> q, ReadOnlySpan<TFloat> k, ReadOnlySpan<TFloat> v,
        Span<TFloat> output, Span<TFloat> logSumExp, int batch, int queryTime, int keyTime, int heads, int headDim)
        where TFloat : unmanaged, IFloatingPointIeee754<TFloat>
        => Forward(q, k, v, output, logSumExp, batch, queryTime, keyTime, heads, headDim, DefaultQueryBlock(queryTime),
            AttentionParallelism.Auto);

    /// <summary>
    /// Forward against the first <paramref name="keyTime"/> rows of a KV cache: k and v are [B, keyCapacity, H, D]
    /// (batch stride keyCapacity * H * D), of which only rows [0, keyTime) of each batch are read, in place.
    /// </summary>
    /// <param name="q">[B, Tq, H, D] queries.</param>
    /// <param name="k">[B, keyCapacity, H, D] cached keys.</param>
    /// <param name="v">[B, keyCapacity, H, D] cached values.</param>
    /// <param name="output">[B, Tq, H, D] attention output, overwritten.</param>
    /// <param name="logSumExp">[B, H, Tq] log-sum-exp of each query's scores.</param>
    /// <param name="batch">B.</param>
    /// <param name="queryTime">Tq.</param>
    /// <param name="keyTime">Tk: cached rows attended (Tq &lt;= Tk &lt;= keyCapacity); the last query sits at position Tk - 1.</param>
    /// <param name="keyCapacity">Rows per batch in k and v (the cache's Tmax), &gt;= keyTime.</param>
    /// <param name="heads">H.</param>
    /// <param name="headDim">D (&gt; 0).</param>
    public static void ForwardCached<TFloat>(ReadOnlySpan<TFloat> q, ReadOnlySpan<TFloat> k, ReadOnlySpan<TFloat> v,
        Span<TFloat> output, Span<TFloat> logSumExp, int batch, int queryTime, int keyTime, int keyCapacity, int heads, int headDim)
        where TFloat : unmanaged, IFloatingPointIeee754<TFloat>
        => Forward(q, k, v, output, logSumExp, batch, queryTime, keyTime, heads, headDim, DefaultQueryBlock(queryTime),
            AttentionParallelism.Auto, keyCapacity);

    /// <summary><see cref="Forward{TFloat}(ReadOnlySpan{TFloat}, ReadOnlySpan{TFloat}, ReadOnlySpan{TFloat}, Span{TFloat}, Span{TFloat}, int, int, int, int, int)"/>
    /// with <c>queryBlock</c> query rows per block (&gt; 0) and the threading chosen: tests force block
    /// boundaries and each threading path.</summary>
    internal static unsafe void Forward<TFloat>(ReadOnlySpan<TFloat> q, ReadOnlySpan<TFloat> k, ReadOnlySpan<TFloat> v,
        Span<TFloat> output, Span<TFloat> logSumExp, int batch, int queryTime, int keyTime, int heads, int headDim,
        int queryBlock, AttentionParallelism parallelism, int keyCapacity = -1)
        where TFloat : unmanaged, IFloatingPointIeee754<TFloat>
    {
        CheckDims(batch, queryTime, keyTime, heads, headDim, queryBlock);
        // keyCapacity: rows per batch of k and v as stored (a KV cache's Tmax); -1 means exactly Tk.
        if (keyCapacity < 0) keyCapacity = keyTime;
        if (keyCapacity < keyTime)
            throw new ArgumentOutOfRangeException(nameof(keyCapacity), keyCapacity, $"keyCapacity must be >= keyTime ({keyTime}).");
        long qSize = (long)batch * queryTime * heads * headDim, kSize = (long)batch * keyCapacity * heads * headDim;
        CpuKernelSupport.Length(q.Length, qSize, nameof(q), "[B, Tq, H, D]");
        CpuKernelSupport.Length(k.Length, kSize, nameof(k), "[B, Tk, H, D]");
        CpuKernelSupport.Length(v.Length, kSize, nameof(v), "[B, Tk, H, D]");
        CpuKernelSupport.Length(output.Length, qSize, nameof(output), "[B, Tq, H, D]");
        CpuKernelSupport.Length(logSumExp.Length, (long)batch * heads * queryTime, nameof(logSumExp), "[B, H, Tq]");
        if (qSize == 0) return;

        var plan = new Plan(batch, queryTime, keyTime, heads, headDim, queryBlock, parallelism, productsPerBlock: 2, keyCapacity);
        fixed (TFloat* pq = q, pk = k, pv = v, po = output, pl = logSumExp)
        {
            TFloat* qp = pq, kp = pk, vp = pv, op = po, lp = pl;
            CpuKernelSupport.For(plan.Pairs, plan.PairsInParallel, pair =>
            {
                TFloat[] buffer = ArrayPool<TFloat>.Shared.Rent(plan.BlockRows * (keyTime + 1));
                try
                {
                    ForwardPair(plan, qp + plan.QueryOffset(pair), kp + plan.KeyOffset(pair), vp + plan.KeyOffset(pair),
                        op + plan.QueryOffset(pair), lp + (long)pair * queryTime, buffer);
                }
                finally
                {
                    ArrayPool<TFloat>.Shared.Return(buffer);
                }
            });
        }
    }

    /// <summary>Forward of one (batch, head): q, k, v and output point at its row 0 (row stride H*D), lse at
    /// its row [Tq]; buffer holds at least BlockRows x (Tk + 1) elements (S, then the rows' 1 / exp-sum).</summary>
    private static unsafe void ForwardPair<T>(in Plan plan, T* q, T* k, T* v, T* output, T* lse, T[] buffer)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int ld = plan.RowStride, d = plan.HeadDim;
        T scale = T.One / T.Sqrt(T.CreateChecked(d));
        for (int i0 = 0; i0 < plan.QueryTime; i0 += plan.BlockRows)
        {
            int rows = Math.Min(plan.BlockRows, plan.QueryTime - i0), keys = plan.KeysSeenBy(i0 + rows - 1);
            if (rows <= DirectRows)
            {
                ForwardRowsDirect(plan, q, k, v, output, lse, i0, rows, buffer.AsSpan(0, keys), scale);
                continue;
            }
            Span<T> s = buffer.AsSpan(0, rows * keys), inverseSum = buffer.AsSpan(rows * keys, rows);
            // S [rows, keys] = scale Q_blk K^T
            CpuGemm.Batched(GemmKernelKind.Auto, plan.GemmThreads, false, true, rows, keys, d, scale,
                Rows(q, i0, rows, ld, d), ld, 0, Rows(k, 0, keys, ld, d), ld, 0, T.Zero, s, keys, 0, 1);
            for (int r = 0; r < rows; r++)
            {
                Span<T> row = s.Slice(r * keys, keys), visible = row[..plan.KeysSeenBy(i0 + r)];
                // Subtracting the max keeps every exp in (0, 1]: no overflow however large the scores.
                T max = TensorPrimitives.Max<T>(visible);
                TensorPrimitives.Subtract(visible, max, visible);
                TensorPrimitives.Exp<T>(visible, visible);
                T sum = TensorPrimitives.Sum<T>(visible);
                row[visible.Length..].Clear(); // the block's masked triangle
                lse[i0 + r] = max + T.Log(sum);
                inverseSum[r] = T.One / sum;
            }
            // O_blk [rows, D] = P V[0:keys], normalized per row afterwards (D multiplies a row instead of `keys`).
            Span<T> o = Rows(output, i0, rows, ld, d);
            CpuGemm.Batched(GemmKernelKind.Auto, plan.GemmThreads, false, false, rows, d, keys, T.One,
                s, keys, 0, Rows(v, 0, keys, ld, d), ld, 0, T.Zero, o, ld, 0, 1);
            for (int r = 0; r < rows; r++)
            {
                Span<T> oRow = o.Slice(r * ld, d);
                TensorPrimitives.Multiply(oRow, inverseSum[r], oRow);
            }
        }
    }

    /// <summary>Forward of queries i0 .. i0 + rows - 1 one at a time: a dot product per visible key, then
    /// output = sum_j p_j v_j as one multiply-add of a value row per key (scores: at least `keys` elements).</summary>
    private static unsafe void ForwardRowsDirect<T>(in Plan plan, T* q, T* k, T* v, T* output, T* lse, int i0, int rows,
        Span<T> scores, T scale)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int ld = plan.RowStride, d = plan.HeadDim;
        for (int i = i0; i < i0 + rows; i++)
        {
            var qi = new ReadOnlySpan<T>(q + (long)i * ld, d);
            var oi = new Span<T>(output + (long)i * ld, d);
            Span<T> s = scores[..plan.KeysSeenBy(i)];
            for (int j = 0; j < s.Length; j++)
                s[j] = TensorPrimitives.Dot(qi, new ReadOnlySpan<T>(k + (long)j * ld, d)) * scale;
            T max = TensorPrimitives.Max<T>(s);
            TensorPrimitives.Subtract(s, max, s);
            TensorPrimitives.Exp<T>(s, s);
            T sum = TensorPrimitives.Sum<T>(s);
            oi.Clear();
            for (int j = 0; j < s.Length; j++)
                TensorPrimitives.MultiplyAdd(new ReadOnlySpan<T>(v + (long)j * ld, d), s[j], oi, oi);
            TensorPrimitives.Multiply(oi, T.One / sum, oi);
            lse[i] = max + T.Log(sum);
        }
    }

    /// <summary>Gradients of <see cref="Forward{TFloat}(ReadOnlySpan{TFloat}, ReadOnlySpan{TFloat}, ReadOnlySpan{TFloat}, Span{TFloat}, Span{TFloat}, int, int, int, int, int)"/>,
    /// recomputing probabilities from <paramref name="logSumExp"/>.</summary>
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
    public static void Backward<TFloat>(ReadOnlySpan<TFloat> dOutput, ReadOnlySpan<TFloat> q, ReadOnlySpan<TFloat> k,
        ReadOnlySpan<TFloat> v, ReadOnlySpan<TFloat> output, ReadOnlySpan<TFloat> logSumExp,
        Span<TFloat> dq, Span<TFloat> dk, Span<TFloat> dv, int batch, int queryTime, int keyTime, int heads, int headDim)
        where TFloat : unmanaged, IFloatingPointIeee754<TFloat>
        => Backward(dOutput, q, k, v, output, logSumExp, dq, dk, dv, batch, queryTime, keyTime, heads, headDim,
            DefaultQueryBlock(queryTime), AttentionParallelism.Auto);

    /// <summary><see cref="Backward{TFloat}(ReadOnlySpan{TFloat}, ReadOnlySpan{TFloat}, ReadOnlySpan{TFloat}, ReadOnlySpan{TFloat}, ReadOnlySpan{TFloat}, ReadOnlySpan{TFloat}, Span{TFloat}, Span{TFloat}, Span{TFloat}, int, int, int, int, int)"/>
    /// with <c>queryBlock</c> query rows per block (&gt; 0; need not match the forward's) and the threading chosen (a test hook).</summary>
    internal static unsafe void Backward<TFloat>(ReadOnlySpan<TFloat> dOutput, ReadOnlySpan<TFloat> q, ReadOnlySpan<TFloat> k,
        ReadOnlySpan<TFloat> v, ReadOnlySpan<TFloat> output, ReadOnlySpan<TFloat> logSumExp,
        Span<TFloat> dq, Span<TFloat> dk, Span<TFloat> dv, int batch, int queryTime, int keyTime, int heads, int headDim,
        int queryBlock, AttentionParallelism parallelism)
        where TFloat : unmanaged, IFloatingPointIeee754<TFloat>
    {
        CheckDims(batch, queryTime, keyTime, heads, headDim, queryBlock);
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

        var plan = new Plan(batch, queryTime, keyTime, heads, headDim, queryBlock, parallelism, productsPerBlock: 5);
        var want = new Wanted(wantDq, wantDk, wantDv);
        fixed (TFloat* pdo = dOutput, pq = q, pk = k, pv = v, po = output, pl = logSumExp, pdq = dq, pdk = dk, pdv = dv)
        {
            TFloat* dop = pdo, qp = pq, kp = pk, vp = pv, op = po, lp = pl, dqp = pdq, dkp = pdk, dvp = pdv;
            CpuKernelSupport.For(plan.Pairs, plan.PairsInParallel, pair =>
            {
                TFloat[] buffer = ArrayPool<TFloat>.Shared.Rent(2 * plan.BlockRows * keyTime);
                try
                {
                    long qOffset = plan.QueryOffset(pair), kOffset = plan.KeyOffset(pair);
                    BackwardPair(plan, want, dop + qOffset, qp + qOffset, kp + kOffset, vp + kOffset, op + qOffset,
                        lp + (long)pair * queryTime, dqp + qOffset, dkp + kOffset, dvp + kOffset, buffer);
                }
                finally
                {
                    ArrayPool<TFloat>.Shared.Return(buffer);
                }
            });
        }
    }

    /// <summary>Which gradients a backward call writes.</summary>
    private readonly record struct Wanted(bool Dq, bool Dk, bool Dv)
    {
        /// <summary>dq and dk need dS; dv alone needs only the probabilities.</summary>
        public bool Ds => Dq || Dk;
    }

    /// <summary>Backward of one (batch, head): the tensors point at its row 0 (row stride H*D; unwanted
    /// gradients are never dereferenced), lse at its row [Tq]; buffer holds at least 2 x BlockRows x Tk
    /// elements (P, then dP, which becomes dS).</summary>
    private static unsafe void BackwardPair<T>(in Plan plan, Wanted want, T* dOutput, T* q, T* k, T* v, T* output, T* lse,
        T* dq, T* dk, T* dv, T[] buffer)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int ld = plan.RowStride, d = plan.HeadDim;
        T scale = T.One / T.Sqrt(T.CreateChecked(d));
        // dk and dv accumulate over query blocks (beta = 1), so this pair's rows start at zero ("=", not "+=").
        for (int j = 0; j < plan.KeyTime; j++)
        {
            if (want.Dk) new Span<T>(dk + (long)j * ld, d).Clear();
            if (want.Dv) new Span<T>(dv + (long)j * ld, d).Clear();
        }
        for (int i0 = 0; i0 < plan.QueryTime; i0 += plan.BlockRows)
        {
            int rows = Math.Min(plan.BlockRows, plan.QueryTime - i0), keys = plan.KeysSeenBy(i0 + rows - 1);
            Span<T> p = buffer.AsSpan(0, rows * keys), ds = buffer.AsSpan(rows * keys, rows * keys);
            Span<T> qBlock = Rows(q, i0, rows, ld, d), dOutBlock = Rows(dOutput, i0, rows, ld, d);
            Span<T> kRows = Rows(k, 0, keys, ld, d), vRows = Rows(v, 0, keys, ld, d);

            // P [rows, keys] = exp(scale Q_blk K^T - lse): the forward softmax (up to rounding) without its max and sum passes.
            CpuGemm.Batched(GemmKernelKind.Auto, plan.GemmThreads, false, true, rows, keys, d, scale,
                qBlock, ld, 0, kRows, ld, 0, T.Zero, p, keys, 0, 1);
            for (int r = 0; r < rows; r++)
            {
                Span<T> row = p.Slice(r * keys, keys), visible = row[..plan.KeysSeenBy(i0 + r)];
                TensorPrimitives.Subtract(visible, lse[i0 + r], visible);
                TensorPrimitives.Exp<T>(visible, visible);
                row[visible.Length..].Clear();
            }
            // dV[0:keys] += P^T dO_blk
            if (want.Dv)
                CpuGemm.Batched(GemmKernelKind.Auto, plan.GemmThreads, true, false, keys, d, rows, T.One,
                    p, keys, 0, dOutBlock, ld, 0, T.One, Rows(dv, 0, keys, ld, d), ld, 0, 1);
            if (!want.Ds) continue;

            // dP [rows, keys] = dO_blk V^T, then in place dS = scale P (dP - delta), delta_i = dO_i . O_i.
            CpuGemm.Batched(GemmKernelKind.Auto, plan.GemmThreads, false, true, rows, keys, d, T.One,
                dOutBlock, ld, 0, vRows, ld, 0, T.Zero, ds, keys, 0, 1);
            for (int r = 0; r < rows; r++)
            {
                long row = (long)(i0 + r) * ld;
                T delta = TensorPrimitives.Dot(new ReadOnlySpan<T>(dOutput + row, d), new ReadOnlySpan<T>(output + row, d));
                Span<T> dsRow = ds.Slice(r * keys, keys), visible = dsRow[..plan.KeysSeenBy(i0 + r)];
                TensorPrimitives.Subtract(visible, delta, visible);
                TensorPrimitives.Multiply(visible, p.Slice(r * keys, visible.Length), visible);
                TensorPrimitives.Multiply(visible, scale, visible);
                dsRow[visible.Length..].Clear();
            }
            // dQ_blk = dS K[0:keys] (each query block once: overwrite); dK[0:keys] += dS^T Q_blk.
            if (want.Dq)
                CpuGemm.Batched(GemmKernelKind.Auto, plan.GemmThreads, false, false, rows, d, keys, T.One,
                    ds, keys, 0, kRows, ld, 0, T.Zero, Rows(dq, i0, rows, ld, d), ld, 0, 1);
            if (want.Dk)
                CpuGemm.Batched(GemmKernelKind.Auto, plan.GemmThreads, true, false, keys, d, rows, T.One,
                    ds, keys, 0, qBlock, ld, 0, T.One, Rows(dk, 0, keys, ld, d), ld, 0, 1);
        }
    }

    /// <summary>Rows [first, first + count) of one head's [T, D] matrix (row stride ld), as the span a GEMM checks.</summary>
    private static unsafe Span<T> Rows<T>(T* head, int first, int count, int ld, int d) where T : unmanaged
        => new(head + (long)first * ld, checked((count - 1) * ld + d));

    /// <summary>The dims of one call, the block size and how it is threaded.</summary>
    private readonly struct Plan
    {
        public readonly int Batch, QueryTime, KeyTime, KeyCapacity, Heads, HeadDim, BlockRows, Pairs, RowStride, GemmThreads;
        public readonly bool PairsInParallel;

        /// <summary>Dims as validated by the caller; <c>productsPerBlock</c> is the GEMMs per query block
        /// (forward 2, backward up to 5), which sizes the parallel decision.</summary>
        public Plan(int batch, int queryTime, int keyTime, int heads, int headDim, int queryBlock, AttentionParallelism parallelism,
            int productsPerBlock, int keyCapacity = -1)
        {
            (Batch, QueryTime, KeyTime, Heads, HeadDim) = (batch, queryTime, keyTime, heads, headDim);
            KeyCapacity = keyCapacity < 0 ? keyTime : keyCapacity;
            // (Only built for non-empty calls: 1 <= Tq <= Tk.)
            BlockRows = Math.Min(Math.Min(queryBlock, Math.Max(MinBlockRows, MaxBlockElements / keyTime)), queryTime);
            Pairs = batch * heads;
            RowStride = heads * headDim;
            int threads = Environment.ProcessorCount;
            // The largest product of a call: the last block's scores, [BlockRows, Tk] over D.
            long blockFlops = 2L * BlockRows * keyTime * headDim;
            long work = productsPerBlock * (long)Pairs * queryTime * keyTime * headDim;
            PairsInParallel = parallelism switch
            {
                AttentionParallelism.Pairs => Pairs > 1,
                AttentionParallelism.Gemm => false,
                // Many pairs keep every thread busy with no hand-offs inside a pair; with few pairs, a
                // product too small for CpuGemm's threads still gains more from the pairs' parallelism.
                _ => CpuKernelSupport.ShouldParallelize(Pairs, work)
                     && (Pairs >= 2 * threads || blockFlops < CpuGemm.ParallelFlopThreshold),
            };
            // Never both: a product inside a parallel pair runs on that pair's thread.
            GemmThreads = PairsInParallel ? 1 : int.MaxValue;
        }

        /// <summary>Keys visible to query i: 0 .. Tk - Tq + i.</summary>
        public int KeysSeenBy(int i) => KeyTime - QueryTime + i + 1;

        /// <summary>Element offset of row 0 of pair (b, h) in a [B, Tq, H, D] tensor.</summary>
        public long QueryOffset(int pair) => ((long)(pair / Heads) * QueryTime * Heads + pair % Heads) * HeadDim;

        /// <summary>Element offset of row 0 of pair (b, h) in a [B, KeyCapacity, H, D] tensor (KeyCapacity = Tk except for a cache).</summary>
        public long KeyOffset(int pair) => ((long)(pair / Heads) * KeyCapacity * Heads + pair % Heads) * HeadDim;
    }

    private static void CheckDims(int batch, int queryTime, int keyTime, int heads, int headDim, int queryBlock)
    {
        CpuKernelSupport.NonNegative(batch, nameof(batch));
        CpuKernelSupport.NonNegative(queryTime, nameof(queryTime));
        CpuKernelSupport.NonNegative(heads, nameof(heads));
        CpuKernelSupport.Positive(headDim, nameof(headDim));
        CpuKernelSupport.Positive(queryBlock, nameof(queryBlock));
        if (keyTime < queryTime)
            throw new ArgumentOutOfRangeException(nameof(keyTime), keyTime,
                $"keyTime must be >= queryTime ({queryTime}): query i sits at position keyTime - queryTime + i.");
    }
}
