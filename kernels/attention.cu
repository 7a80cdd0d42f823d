// attention.cu - Phi-2's causal scaled-dot-product attention (HF PhiAttention's core after rotary), flash-style: no
// [Tq, Tk] matrix ever reaches global memory. The same contracts as the CPU backend
// (src/Phi2Native.Backends/Ops/Attention/CpuAttention.cs; AttentionOp's forward, backward and Cached):
//
//   q [B, Tq, H, D], k and v [B, Tk, H, D] (Tk >= Tq); query i sits at position Tk - Tq + i and sees keys j <= Tk - Tq + i.
//   s_ij = (q_i . k_j) * scale, scale = 1 / sqrt(D) (rounded once, as the CPU's fp32 1 / sqrt(D));
//   lse_i = log sum_j exp(s_ij);  p_ij = exp(s_ij - lse_i);  out_i = sum_j p_ij v_j
//   backward: delta_i = dO_i . out_i;  dp_ij = dO_i . v_j;  ds_ij = (dp_ij - delta_i) * p_ij * scale
//             dv_j = sum_i p_ij dO_i;  dq_i = sum_j ds_ij k_j;  dk_j = sum_i ds_ij q_i
//
// q, k, v, out, dO, dq, dk, dv are of the dtype (f32 or bf16); lse and delta are fp32 [B, H, Tq]. Every tile is
// widened to fp32 in shared memory as it is staged; scores, the softmax (running max and sum), the products and
// every accumulation are fp32; each output is rounded once on store. D may be anything in 1..128 (Phi-2: 80):
// global tensors are used as they are, unpadded; shared tiles use a row stride of D | 1 (odd, so the rows that
// one warp reads at once fall in different banks).
//
// Kernels. T = PHI2_ATTENTION_TILE (32) queries or keys per tile; every kernel but delta runs 128 threads as
// 32 rows x 4 lanes: lane c of a row owns scores c, c + 4, ..., c + 28 of a 32 x 32 score tile and output
// columns c, c + 4, ... of its row (at most 128 / 4 = 32 fp32 accumulators per output).
//   attention_{dtype}(q, k, v, out, lse, Tq, Tk, H, D)
//       grid (B * H, ceil(Tq / T)), block (128), dynamic shared memory (3 * T * (D | 1) + T * (T + 1)) floats
//       (35,328 bytes at D = 80, 53,760 at D = 128; above 48 KiB the device opts the kernel in).
//       A block owns query tile blockIdx.y counted from the end (the tiles with the most keys start first), stages
//       its queries once, then walks key tiles 0 .. the last key its last query sees: stage K and V, scores of its
//       rows (masked: -Inf beyond each row's position), online softmax (m = running max, l = running sum of
//       exp(s - m), both fp32; acc and l are rescaled by exp(m_old - m_new)), P through shared memory, acc += P V.
//       Key tile 0 holds key 0, which every query sees, so m is finite from the first tile on and a later tile
//       with every key masked only adds zeros. out = acc * (1 / l) (the CPU's order); lse = m + log(l).
//       Saves lse [B, H, Tq] for backward (which also needs q, k, v and out); lse may be null (not needed).
//   cached_attention_{dtype}(q, key_cache, value_cache, row_key_times, out, lse, Tq, key_time, Tmax, H, D)
//       The same kernel over the first key_time rows of caches [B, Tmax, H, D], read in place (Tmax is the
//       batch stride in rows); query i sits at key_time - Tq + i; Tq >= 1 (decode: Tq = 1; prefill through the
//       cache: Tq = key_time). row_key_times (I32 [B]; AttentionOp.Cached always passes it) gives each batch row its
//       own key time instead (key_time is then ignored), or is null; a row's key time outside [Tq, Tmax] makes
//       that row's output (and lse) NaN and reads nothing. lse may be null (inference saves nothing). Launch as
//       attention_{dtype}.
//   attention_backward_delta_{dtype}(dout, out, delta, rows, Tq, H, D)   (also f16, for attention_mma_backward.cu)
//       delta[b, h, i] = dO_i . out_i (fp32; the CPU's delta), rows = B * Tq * H; one warp per row:
//       grid (ceil(rows / 8)), block (256), no dynamic shared memory. Needed when dq or dk is.
//   attention_backward_{dtype}(dout, q, k, v, lse, delta, dq, dk, dv, Tq, Tk, H, D)
//       Deterministic, no atomics: two kinds of block in one grid, grid (B * H, key_tiles + query_tiles), block (128),
//       key_tiles = ceil(Tk / T) when dk or dv is wanted (else 0), query_tiles = ceil(Tq / T) when dq is (else 0):
//       - blockIdx.y < key_tiles: key tile y. Stages its K and V once, walks the query tiles that see any of its
//         keys (from query max(0, k0 - (Tk - Tq)) on): stage Q, dO, lse, delta; recompute P = exp(s - lse) and
//         dS; dv_j += sum_i p_ij dO_i, dk_j += sum_i ds_ij q_i in registers; writes dk and dv (=) at the end.
//       - otherwise query tile (counted from the end): stages its Q and dO once, walks key tiles 0 .. its last
//         key: recompute P and dS (the same arithmetic, in the same order, as the key tiles);
//         dq_i += sum_j ds_ij k_j in registers; writes dq (=) at the end.
//       dynamic shared memory (4 * T * (D | 1) + 2 * T * (T + 1) + 2 * T) floats (50,176 bytes at D = 80, 74,752 at
//       D = 128). dq, dk, dv may each be null (not needed; all null launches nothing); delta is read only when dq
//       or dk is wanted. Tq = 0 with Tk > 0 writes dk = dv = 0 (nothing attends), as the CPU does.
//       Why two passes rather than FlashAttention-2's single pass with atomicAdd on dq: the result does not depend
//       on block scheduling (run to run, and emulator to GPU), dq needs no fp32 scratch and no zeroing, and dq's
//       blocks run beside dk/dv's in one launch. The price is recomputing S and dP in the dq blocks: 7 tile
//       products per (query tile, key tile) instead of 5.
//
// Performance notes. These kernels are the SIMT reference (f32, and bf16 at a D or alignment the tensor cores do not
// take): the bf16 forward runs on tensor cores in attention_mma.cu, plain and through a cache (chunked prompts,
// batched decoding), and decoding (Tq = 1..4) splits the keys over blocks in attention_decode.cu (flash-decoding, a
// combine of (m, l, acc) partials; AttentionKernels.Choose picks). Not done here:
//   - Tensor cores for the backward: mma_m16n8k16_bf16 for dO V^T, P^T dO, dS^T Q, dS K, one warp per 16 rows, fed
//     by ldmatrix from bf16 tiles; the SIMT products here are bound by shared-memory loads (one per FMA plus the
//     broadcast).
//   - Register tiling of the score tile (e.g. 4 x 4 per thread) to cut shared loads per FMA.
//   - Stage bf16 (not fp32) tiles, halving shared memory and doubling occupancy; cp.async double buffering of the
//     next K/V tile while this one is used.
//   - Causal tiles fully below the diagonal need no mask test.
#include "common.cuh"

#define PHI2_ATTENTION_TILE 32
#define PHI2_ATTENTION_THREADS 128
#define PHI2_ATTENTION_MAX_D 128
// Scores of the 32 x 32 tile per thread (32 rows x 4 lanes), and output columns per thread at most.
#define PHI2_ATTENTION_SCORES (PHI2_ATTENTION_TILE / 4)
#define PHI2_ATTENTION_COLUMNS (PHI2_ATTENTION_MAX_D / 4)
// Row stride of a 32 x 32 score tile in shared memory.
#define PHI2_ATTENTION_TILE_STRIDE (PHI2_ATTENTION_TILE + 1)

PHI2_DEVICE int attention_min(int a, int b) { return a < b ? a : b; }
PHI2_DEVICE int attention_max(int a, int b) { return a > b ? a : b; }

PHI2_DEVICE float attention_minus_infinity() { return __uint_as_float(0xff800000u); }

// 1 / sqrt(D) with one rounding each, as the CPU's float 1 / MathF.Sqrt(D) (on the GPU too: no fast-math sqrt).
PHI2_DEVICE float attention_scale(int D) { return __fdiv_rn(1.0f, __fsqrt_rn((float)D)); }

// Rows [row0, row0 + T) of one head into a shared fp32 tile (row stride ds); rows at or past `limit` read as 0.
// `head` points at row 0 of the head ((b * rows_per_batch * H + h) * D); rows are H * D elements apart.
template <typename Dt>
PHI2_DEVICE void attention_stage(const typename Dt::type* head, int row0, int limit, long long row_stride, int D, int ds,
                                 float* tile)
{
    for (int e = (int)threadIdx.x; e < PHI2_ATTENTION_TILE * D; e += (int)blockDim.x)
    {
        int r = e / D, d = e - r * D;
        int row = row0 + r;
        tile[r * ds + d] = row < limit ? load<Dt>(head, (long long)row * row_stride + d) : 0.0f;
    }
}

// Forward over keys [0, key_time) of k and v [B, capacity, H, D] (capacity = Tk, or a cache's Tmax); with
// row_key_times (I32 [B], the per-row cache), batch row b attends over its first row_key_times[b] keys instead.
template <typename Dt>
PHI2_DEVICE void attention_forward(const typename Dt::type* q, const typename Dt::type* k, const typename Dt::type* v,
                                   const int* row_key_times, typename Dt::type* out, float* lse, int Tq, int key_time,
                                   int capacity, int H, int D)
{
    PHI2_DYNAMIC_SHARED(float, shared);
    const int ds = D | 1;
    float* qs = shared;
    float* ks = qs + PHI2_ATTENTION_TILE * ds;
    float* vs = ks + PHI2_ATTENTION_TILE * ds;
    float* ps = vs + PHI2_ATTENTION_TILE * ds;

    const int pair = (int)blockIdx.x, b = pair / H, h = pair - b * H;
    const int q0 = ((int)gridDim.y - 1 - (int)blockIdx.y) * PHI2_ATTENTION_TILE;
    const long long row_stride = (long long)H * D;
    const long long q_head = ((long long)b * Tq * H + h) * D, k_head = ((long long)b * capacity * H + h) * D;
    const int r = (int)threadIdx.x / 4, c = (int)threadIdx.x % 4;
    const int qi = q0 + r;
    const bool valid = qi < Tq;
    if (row_key_times) key_time = row_key_times[b];
    if (key_time < Tq || key_time > capacity)
    {
        // A per-row key time outside [Tq, Tmax] (the CPU backend throws; a kernel cannot): NaN rows, no cache read.
        // Block-uniform, before any barrier.
        if (!valid) return;
        float nan = __uint_as_float(0x7fc00000u);
        for (int d = c; d < D; d += 4) store<Dt>(out, q_head + (long long)qi * row_stride + d, nan);
        if (lse && c == 0) lse[(long long)pair * Tq + qi] = nan;
        return;
    }
    const int offset = key_time - Tq;
    const int last = offset + attention_min(q0 + PHI2_ATTENTION_TILE, Tq) - 1; // the last key any query of the tile sees
    const int position = valid ? offset + qi : last; // padding rows see every key: finite, never stored
    const float scale = attention_scale(D);

    attention_stage<Dt>(q + q_head, q0, Tq, row_stride, D, ds, qs);
    float m = attention_minus_infinity(), l = 0.0f;
    float acc[PHI2_ATTENTION_COLUMNS];
#pragma unroll
    for (int x = 0; x < PHI2_ATTENTION_COLUMNS; x++) acc[x] = 0.0f;

    for (int k0 = 0; k0 <= last; k0 += PHI2_ATTENTION_TILE)
    {
        __syncthreads(); // qs staged; the previous tile's ks, vs and ps all read
        attention_stage<Dt>(k + k_head, k0, last + 1, row_stride, D, ds, ks);
        attention_stage<Dt>(v + k_head, k0, last + 1, row_stride, D, ds, vs);
        __syncthreads();

        float s[PHI2_ATTENTION_SCORES];
#pragma unroll
        for (int jj = 0; jj < PHI2_ATTENTION_SCORES; jj++) s[jj] = 0.0f;
        for (int d = 0; d < D; d++)
        {
            float qd = qs[r * ds + d];
#pragma unroll
            for (int jj = 0; jj < PHI2_ATTENTION_SCORES; jj++) s[jj] += qd * ks[(c + 4 * jj) * ds + d];
        }
        float tile_max = attention_minus_infinity();
#pragma unroll
        for (int jj = 0; jj < PHI2_ATTENTION_SCORES; jj++)
        {
            int j = k0 + c + 4 * jj;
            s[jj] = j <= position ? s[jj] * scale : attention_minus_infinity();
            tile_max = fmaxf(tile_max, s[jj]);
        }
        // The row's 4 lanes are adjacent in one warp: lanes 4r .. 4r + 3.
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
        float m_new = fmaxf(m, tile_max); // finite: tile 0 holds key 0, which every row sees
        float alpha = expf(m - m_new);    // 0 on the first tile (m = -Inf), 1 while the max holds
        float sum = 0.0f;
#pragma unroll
        for (int jj = 0; jj < PHI2_ATTENTION_SCORES; jj++)
        {
            float p = expf(s[jj] - m_new); // masked: exp(-Inf) = 0
            ps[r * PHI2_ATTENTION_TILE_STRIDE + c + 4 * jj] = p;
            sum += p;
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        l = l * alpha + sum;
        m = m_new;
        __syncthreads(); // ps written

        int keys = attention_min(PHI2_ATTENTION_TILE, last + 1 - k0);
#pragma unroll
        for (int x = 0; x < PHI2_ATTENTION_COLUMNS; x++) acc[x] *= alpha;
        for (int j = 0; j < keys; j++)
        {
            float p = ps[r * PHI2_ATTENTION_TILE_STRIDE + j];
            const float* vj = vs + j * ds;
#pragma unroll
            for (int x = 0; x < PHI2_ATTENTION_COLUMNS; x++)
            {
                int d = c + 4 * x;
                if (d < D) acc[x] += p * vj[d];
            }
        }
    }

    if (!valid) return; // no barrier follows
    float inverse = 1.0f / l;
    long long o = q_head + (long long)qi * row_stride;
#pragma unroll
    for (int x = 0; x < PHI2_ATTENTION_COLUMNS; x++)
    {
        int d = c + 4 * x;
        if (d < D) store<Dt>(out, o + d, acc[x] * inverse);
    }
    if (lse && c == 0) lse[(long long)pair * Tq + qi] = m + logf(l);
}

PHI2_KERNEL void attention_f32(const float* q, const float* k, const float* v, float* out, float* lse, int Tq, int Tk,
                               int H, int D)
{
    attention_forward<dtype_f32>(q, k, v, nullptr, out, lse, Tq, Tk, Tk, H, D);
}

PHI2_KERNEL void attention_bf16(const bf16_t* q, const bf16_t* k, const bf16_t* v, bf16_t* out, float* lse, int Tq,
                                int Tk, int H, int D)
{
    attention_forward<dtype_bf16>(q, k, v, nullptr, out, lse, Tq, Tk, Tk, H, D);
}

PHI2_KERNEL void cached_attention_f32(const float* q, const float* key_cache, const float* value_cache, const int* row_key_times,
                                      float* out, float* lse, int Tq, int key_time, int Tmax, int H, int D)
{
    attention_forward<dtype_f32>(q, key_cache, value_cache, row_key_times, out, lse, Tq, key_time, Tmax, H, D);
}

PHI2_KERNEL void cached_attention_bf16(const bf16_t* q, const bf16_t* key_cache, const bf16_t* value_cache,
                                       const int* row_key_times, bf16_t* out, float* lse, int Tq, int key_time, int Tmax, int H, int D)
{
    attention_forward<dtype_bf16>(q, key_cache, value_cache, row_key_times, out, lse, Tq, key_time, Tmax, H, D);
}

// delta[b, h, i] = dO_i . out_i, one warp per row of [B, Tq, H] (whole warps exit together past the end).
template <typename Dt>
PHI2_DEVICE void attention_delta(const typename Dt::type* dout, const typename Dt::type* out, float* delta, int rows, int Tq,
                                 int H, int D)
{
    int row = (int)(((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32), lane = (int)threadIdx.x % 32;
    if (row >= rows) return;
    long long base = (long long)row * D;
    float s = 0.0f;
    for (int d = lane; d < D; d += 32) s += load<Dt>(dout, base + d) * load<Dt>(out, base + d);
    s = warp_sum(s);
    if (lane != 0) return;
    int h = row % H, t = (row / H) % Tq, b = row / H / Tq;
    delta[((long long)b * H + h) * Tq + t] = s;
}

PHI2_KERNEL void attention_backward_delta_f32(const float* dout, const float* out, float* delta, int rows, int Tq, int H, int D)
{
    attention_delta<dtype_f32>(dout, out, delta, rows, Tq, H, D);
}

PHI2_KERNEL void attention_backward_delta_bf16(const bf16_t* dout, const bf16_t* out, float* delta, int rows, int Tq, int H,
                                               int D)
{
    attention_delta<dtype_bf16>(dout, out, delta, rows, Tq, H, D);
}

// f16: the delta of attention_mma_backward.cu's f16 instantiations (device checks only).
PHI2_KERNEL void attention_backward_delta_f16(const f16_t* dout, const f16_t* out, float* delta, int rows, int Tq, int H, int D)
{
    attention_delta<dtype_f16>(dout, out, delta, rows, Tq, H, D);
}

// p and ds of one (query, key) pair from its two dot products (q_i . k_j and dO_i . v_j); both kinds of backward
// block call this with dot products summed in the same order, so both recompute the same P and dS. Not visible:
// p = ds = 0.
PHI2_DEVICE void attention_probability(bool visible, float qk, float dov, float lse_i, float delta_i, float scale, float& p,
                                       float& ds)
{
    p = visible ? expf(qk * scale - lse_i) : 0.0f;
    ds = visible ? (dov - delta_i) * p * scale : 0.0f;
}

template <typename Dt>
PHI2_DEVICE void attention_backward(const typename Dt::type* dout, const typename Dt::type* q, const typename Dt::type* k,
                                    const typename Dt::type* v, const float* lse, const float* delta, typename Dt::type* dq,
                                    typename Dt::type* dk, typename Dt::type* dv, int Tq, int Tk, int H, int D)
{
    PHI2_DYNAMIC_SHARED(float, shared);
    const int ds = D | 1;
    float* qs = shared;
    float* dos = qs + PHI2_ATTENTION_TILE * ds;
    float* ks = dos + PHI2_ATTENTION_TILE * ds;
    float* vs = ks + PHI2_ATTENTION_TILE * ds;
    float* ps = vs + PHI2_ATTENTION_TILE * ds;
    float* dss = ps + PHI2_ATTENTION_TILE * PHI2_ATTENTION_TILE_STRIDE;
    float* lse_s = dss + PHI2_ATTENTION_TILE * PHI2_ATTENTION_TILE_STRIDE;
    float* delta_s = lse_s + PHI2_ATTENTION_TILE;

    const int pair = (int)blockIdx.x, b = pair / H, h = pair - b * H;
    const long long row_stride = (long long)H * D;
    const long long q_head = ((long long)b * Tq * H + h) * D, k_head = ((long long)b * Tk * H + h) * D;
    const long long lse_head = (long long)pair * Tq;
    const int offset = Tk - Tq;
    const float scale = attention_scale(D);
    const bool want_ds = dq || dk;
    const int key_tiles = (dk || dv) ? (Tk + PHI2_ATTENTION_TILE - 1) / PHI2_ATTENTION_TILE : 0;
    const int row = (int)threadIdx.x / 4, c = (int)threadIdx.x % 4;
    float acc1[PHI2_ATTENTION_COLUMNS], acc2[PHI2_ATTENTION_COLUMNS];
#pragma unroll
    for (int x = 0; x < PHI2_ATTENTION_COLUMNS; x++) acc1[x] = acc2[x] = 0.0f;

    if ((int)blockIdx.y < key_tiles)
    {
        // Key tile: this thread owns key kj; acc1 = its dk row, acc2 = its dv row.
        const int k0 = (int)blockIdx.y * PHI2_ATTENTION_TILE, kj = k0 + row;
        attention_stage<Dt>(k + k_head, k0, Tk, row_stride, D, ds, ks);
        attention_stage<Dt>(v + k_head, k0, Tk, row_stride, D, ds, vs);
        for (int q0 = attention_max(0, k0 - offset); q0 < Tq; q0 += PHI2_ATTENTION_TILE)
        {
            __syncthreads(); // ks, vs staged; the previous tile's qs, dos, ps, dss, lse_s, delta_s all read
            attention_stage<Dt>(q + q_head, q0, Tq, row_stride, D, ds, qs);
            attention_stage<Dt>(dout + q_head, q0, Tq, row_stride, D, ds, dos);
            for (int i = (int)threadIdx.x; i < PHI2_ATTENTION_TILE; i += (int)blockDim.x)
            {
                bool in = q0 + i < Tq;
                lse_s[i] = in ? lse[lse_head + q0 + i] : 0.0f;
                delta_s[i] = in && want_ds ? delta[lse_head + q0 + i] : 0.0f;
            }
            __syncthreads();

            float qk[PHI2_ATTENTION_SCORES], dov[PHI2_ATTENTION_SCORES];
#pragma unroll
            for (int ii = 0; ii < PHI2_ATTENTION_SCORES; ii++) qk[ii] = dov[ii] = 0.0f;
            for (int d = 0; d < D; d++)
            {
                float kd = ks[row * ds + d], vd = vs[row * ds + d];
#pragma unroll
                for (int ii = 0; ii < PHI2_ATTENTION_SCORES; ii++)
                {
                    int i = c + 4 * ii;
                    qk[ii] += qs[i * ds + d] * kd;
                    dov[ii] += dos[i * ds + d] * vd;
                }
            }
#pragma unroll
            for (int ii = 0; ii < PHI2_ATTENTION_SCORES; ii++)
            {
                int i = c + 4 * ii, qi = q0 + i;
                float p, dsv;
                attention_probability(qi < Tq && kj < Tk && kj <= offset + qi, qk[ii], dov[ii], lse_s[i], delta_s[i], scale, p, dsv);
                ps[i * PHI2_ATTENTION_TILE_STRIDE + row] = p;
                dss[i * PHI2_ATTENTION_TILE_STRIDE + row] = dsv;
            }
            __syncthreads(); // ps, dss written

            int rows = attention_min(PHI2_ATTENTION_TILE, Tq - q0);
            for (int i = 0; i < rows; i++)
            {
                float p = ps[i * PHI2_ATTENTION_TILE_STRIDE + row], dsv = dss[i * PHI2_ATTENTION_TILE_STRIDE + row];
                const float* qrow = qs + i * ds;
                const float* dorow = dos + i * ds;
#pragma unroll
                for (int x = 0; x < PHI2_ATTENTION_COLUMNS; x++)
                {
                    int d = c + 4 * x;
                    if (d < D)
                    {
                        acc1[x] += dsv * qrow[d];
                        acc2[x] += p * dorow[d];
                    }
                }
            }
        }
        if (kj >= Tk) return; // no barrier follows
        long long o = k_head + (long long)kj * row_stride;
#pragma unroll
        for (int x = 0; x < PHI2_ATTENTION_COLUMNS; x++)
        {
            int d = c + 4 * x;
            if (d >= D) continue;
            if (dk) store<Dt>(dk, o + d, acc1[x]);
            if (dv) store<Dt>(dv, o + d, acc2[x]);
        }
        return;
    }

    // Query tile (counted from the end: the tiles with the most keys start first): this thread owns query qi;
    // acc1 = its dq row.
    const int query_tiles = (int)gridDim.y - key_tiles;
    const int q0 = (query_tiles - 1 - ((int)blockIdx.y - key_tiles)) * PHI2_ATTENTION_TILE, qi = q0 + row;
    const bool valid = qi < Tq;
    const int last = offset + attention_min(q0 + PHI2_ATTENTION_TILE, Tq) - 1;
    attention_stage<Dt>(q + q_head, q0, Tq, row_stride, D, ds, qs);
    attention_stage<Dt>(dout + q_head, q0, Tq, row_stride, D, ds, dos);
    const float lse_i = valid ? lse[lse_head + qi] : 0.0f, delta_i = valid ? delta[lse_head + qi] : 0.0f;
    for (int k0 = 0; k0 <= last; k0 += PHI2_ATTENTION_TILE)
    {
        __syncthreads(); // qs, dos staged; the previous tile's ks, vs and dss all read
        attention_stage<Dt>(k + k_head, k0, last + 1, row_stride, D, ds, ks);
        attention_stage<Dt>(v + k_head, k0, last + 1, row_stride, D, ds, vs);
        __syncthreads();

        float qk[PHI2_ATTENTION_SCORES], dov[PHI2_ATTENTION_SCORES];
#pragma unroll
        for (int jj = 0; jj < PHI2_ATTENTION_SCORES; jj++) qk[jj] = dov[jj] = 0.0f;
        for (int d = 0; d < D; d++)
        {
            float qd = qs[row * ds + d], dod = dos[row * ds + d];
#pragma unroll
            for (int jj = 0; jj < PHI2_ATTENTION_SCORES; jj++)
            {
                int j = c + 4 * jj;
                // The same products in the same order as the key tiles' (q_i[d] * k_j[d], dO_i[d] * v_j[d]).
                qk[jj] += qd * ks[j * ds + d];
                dov[jj] += dod * vs[j * ds + d];
            }
        }
#pragma unroll
        for (int jj = 0; jj < PHI2_ATTENTION_SCORES; jj++)
        {
            int j = c + 4 * jj, kj = k0 + j;
            float p, dsv;
            attention_probability(valid && kj <= offset + qi, qk[jj], dov[jj], lse_i, delta_i, scale, p, dsv);
            dss[row * PHI2_ATTENTION_TILE_STRIDE + j] = dsv;
        }
        __syncthreads(); // dss written

        int keys = attention_min(PHI2_ATTENTION_TILE, last + 1 - k0);
        for (int j = 0; j < keys; j++)
        {
            float dsv = dss[row * PHI2_ATTENTION_TILE_STRIDE + j];
            const float* krow = ks + j * ds;
#pragma unroll
            for (int x = 0; x < PHI2_ATTENTION_COLUMNS; x++)
            {
                int d = c + 4 * x;
                if (d < D) acc1[x] += dsv * krow[d];
            }
        }
    }
    if (!valid) return;
    long long o = q_head + (long long)qi * row_stride;
#pragma unroll
    for (int x = 0; x < PHI2_ATTENTION_COLUMNS; x++)
    {
        int d = c + 4 * x;
        if (d < D) store<Dt>(dq, o + d, acc1[x]);
    }
}

PHI2_KERNEL void attention_backward_f32(const float* dout, const float* q, const float* k, const float* v, const float* lse,
                                        const float* delta, float* dq, float* dk, float* dv, int Tq, int Tk, int H, int D)
{
    attention_backward<dtype_f32>(dout, q, k, v, lse, delta, dq, dk, dv, Tq, Tk, H, D);
}

PHI2_KERNEL void attention_backward_bf16(const bf16_t* dout, const bf16_t* q, const bf16_t* k, const bf16_t* v, const float* lse,
                                         const float* delta, bf16_t* dq, bf16_t* dk, bf16_t* dv, int Tq, int Tk, int H,
                                         int D)
{
    attention_backward<dtype_bf16>(dout, q, k, v, lse, delta, dq, dk, dv, Tq, Tk, H, D);
}
