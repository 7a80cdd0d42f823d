// attention_mma.cu - the causal attention forward of attention.cu on tensor cores (FlashAttention-2's structure),
// for bf16 (the engine's GPU dtype) and f16 (for the device checks), plain and through a KV cache. The same contracts
// as attention_{dtype} and cached_attention_{dtype} (attention.cu's header: q [B, Tq, H, D], k and v [B, Tk, H, D],
// Tk >= Tq, query i at position Tk - Tq + i, scale = 1 / sqrt(D), out [B, Tq, H, D], lse [B, H, Tq] fp32 or null;
// through a cache: caches [B, Tmax, H, D] read in place, per-row key times I32 [B], a row's key time outside
// [Tq, Tmax] giving NaN rows (and lse) and reading nothing), for D a multiple of 16 in 16..128 and q, k, v 16-byte
// aligned (AttentionKernels.Choose picks these kernels, the SIMT ones or attention_decode.cu's from the shapes, dtype
// and pointers).
//
// Kernels, one per head-dim bound (the register arrays are sized for the bound, not for 128: 32 serves D 16 and 32,
// 64 serves 48 and 64, 80 serves 80 (Phi-2), 128 serves 96, 112 and 128). BM = 64 queries per block (4 warps, one per
// 16 query rows), BN = 64 keys per key tile.
//   attention_mma_{bf16,f16}_d{32,64,80,128}(q, k, v, out, lse, Tq, Tk, H, D)
//   cached_attention_mma_{bf16,f16}_d{32,64,80,128}(q, key_cache, value_cache, row_key_times, out, lse, Tq, key_time, Tmax, H, D)
//       (row_key_times as cached_attention's: null means every row's key time is key_time; Tmax is the batch stride
//       in rows; a row reads only its first key time rows)
//       grid (B * H, ceil(Tq / 64)) (never the key time: a cached launch does not change as the cache fills),
//       block (128), dynamic shared memory 4 * 64 * (D + 8) 16-bit elements (45,056 bytes at D = 80, 69,632 at
//       D = 128; above 48 KiB the device opts the kernel in): two buffers each of K and V, rows padded by 8 elements
//       (16 bytes) so that the 8 rows one ldmatrix reads fall in different banks and every row stays 16-byte aligned.
//       The block's Q tile is staged in the second K buffer: each warp loads its Q fragments (ldmatrix) once, before
//       key tile 1 is issued into that buffer.
//       A block owns query tile blockIdx.y counted from the end (the tiles with the most keys start first). It copies
//       Q and key tile 0 with cp.async and loads Q's fragments, then for each key tile up to the last key its last
//       query sees: issues the next tile's K and V into the other buffer (double buffering), waits for this tile's,
//       and each warp computes S = Q K^T (16 x 64, fp32, mma.m16n8k16 over D / 16 k-steps; K's fragments by
//       ldmatrix), scales and masks it (only in tiles that cross the warp's diagonal; a tile wholly above it is
//       skipped by the warp, tiles past the block's last key are never loaded), updates the online softmax in fp32
//       registers (m = running max, l = running sum of exp(s - m) per lane, reduced over the row's 4 lanes at the
//       end; acc and l rescaled by exp(m_old - m_new)), rounds P to the dtype in registers and adds P V into fp32
//       accumulators (V's fragments by ldmatrix.trans). Rows past Tq and keys past the last are copied as zeros
//       (cp.async's zero fill), never read from global memory. out = acc * (1 / l), lse = m + log(l).
//       Saves lse for backward as attention_{dtype} does.
// Why 4 warps of 16 rows (NVRTC 12.5, kernels/resources.tsv, sm_90, bf16 at D = 80): the kernel needs 168 registers
// a thread, so 3 blocks of 4 warps fit an SM (12 warps, 18.8 %; registers bind, not the 45,056 bytes of shared
// memory); 8 warps a block (128 query rows, halving K and V's reads from L2) would fit 1 block (8 warps) at those
// registers. The head-dim bound is what sized the arrays for D = 128 before (255 registers, 2 blocks at any D).
// Staging Q in K's second buffer saves a fifth 64-row tile (11 KiB at D = 80) that the registers would leave unused
// now, but keeps 4 blocks by shared memory within reach of a leaner kernel.
// Numerics against the fp32 reference (CpuAttention): scores, the softmax and l are fp32 from exact 16-bit inputs;
// P is rounded to the dtype before P V (relative error 2^-9 in bf16, 2^-12 in f16 per probability, so the output
// differs by at most that times sum_j p_ij |v_j|), and out is rounded once on store.
// Bytes a launch moves: Q, out once, K and V once per query tile that sees them, lse once (and the key times);
// flops: 4 * D per visible (query, key) pair, on tensor cores (the masked triangle of a diagonal tile is computed
// and discarded).
#include "common.cuh"

#define PHI2_ATTENTION_MMA_ROWS 64
#define PHI2_ATTENTION_MMA_KEYS 64
#define PHI2_ATTENTION_MMA_THREADS 128
#define PHI2_ATTENTION_MMA_PAD 8

// The mma and the fragment packing of each 16-bit dtype.
template <typename Dt> struct attention_mma_ops;
template <> struct attention_mma_ops<dtype_bf16>
{
    static PHI2_DEVICE void mma(float c[4], const unsigned a[4], const unsigned b[2]) { mma_m16n8k16_bf16(c, a, b); }
    static PHI2_DEVICE unsigned pack(float lo, float hi) { return pack_bf16x2(lo, hi); }
};
template <> struct attention_mma_ops<dtype_f16>
{
    static PHI2_DEVICE void mma(float c[4], const unsigned a[4], const unsigned b[2]) { mma_m16n8k16_f16(c, a, b); }
    static PHI2_DEVICE unsigned pack(float lo, float hi) { return pack_f16x2(lo, hi); }
};

PHI2_DEVICE float attention_mma_minus_infinity() { return __uint_as_float(0xff800000u); }

PHI2_DEVICE int attention_mma_min(int a, int b) { return a < b ? a : b; }

// Rows [row0, row0 + 64) of one head (`head` points at its row 0; rows row_stride elements apart) into a shared tile
// (row stride `stride`) by cp.async, 16 bytes a copy; rows at or past `limit` become zeros and are not read.
template <typename T>
PHI2_DEVICE void attention_mma_stage(T* tile, const T* head, int row0, int limit, int row_stride, int D, int stride)
{
    const int chunks = D / 8;
    for (int c = (int)threadIdx.x; c < PHI2_ATTENTION_MMA_ROWS * chunks; c += (int)blockDim.x)
    {
        int r = c / chunks, x = c - r * chunks, row = row0 + r;
        bool read = row < limit;
        cp_async_cg_16_or_zero(tile + r * stride + x * 8, head + (long long)(read ? row : 0) * row_stride + x * 8, read);
    }
}

// Forward over keys [0, key_time) of k and v [B, capacity, H, D] (capacity = Tk, or a cache's Tmax); with
// row_key_times (I32 [B], the per-row cache), batch row b attends over its first row_key_times[b] keys instead.
// Bound: the largest D this instantiation takes (a multiple of 16); its fragments and accumulators are sized by it.
template <typename Dt, int Bound>
PHI2_DEVICE void attention_mma_forward(const typename Dt::type* q, const typename Dt::type* k, const typename Dt::type* v,
                                       const int* row_key_times, typename Dt::type* out, float* lse, int Tq, int key_time,
                                       int capacity, int H, int D)
{
    typedef typename Dt::type T;
    typedef attention_mma_ops<Dt> Ops;
    PHI2_DYNAMIC_SHARED(T, shared);
    const int stride = D + PHI2_ATTENTION_MMA_PAD, tile_elements = PHI2_ATTENTION_MMA_ROWS * stride;
    T* ks = shared;                 // two buffers: ks, ks + tile_elements
    T* vs = ks + 2 * tile_elements; // likewise
    T* qs = ks + tile_elements;     // the Q tile, in K's second buffer until the fragments are loaded

    const int pair = (int)blockIdx.x, b = pair / H, h = pair - b * H;
    const int q0 = ((int)gridDim.y - 1 - (int)blockIdx.y) * PHI2_ATTENTION_MMA_ROWS;
    const int row_stride = H * D;
    const long long q_head = ((long long)b * Tq * H + h) * D, k_head = ((long long)b * capacity * H + h) * D;
    const int warp = (int)threadIdx.x / 32, lane = (int)threadIdx.x % 32, g = lane >> 2, t = lane % 4;
    const int block_rows = Tq - q0 < PHI2_ATTENTION_MMA_ROWS ? Tq - q0 : PHI2_ATTENTION_MMA_ROWS;
    if (row_key_times) key_time = row_key_times[b];
    if (key_time < Tq || key_time > capacity)
    {
        // A per-row key time outside [Tq, Tmax] (the CPU backend throws; a kernel cannot): NaN rows, no cache read.
        // Block-uniform, before any barrier.
        const float nan = __uint_as_float(0x7fc00000u);
        for (int e = (int)threadIdx.x; e < block_rows * D; e += (int)blockDim.x)
        {
            int r = e / D;
            store<Dt>(out, q_head + (long long)(q0 + r) * row_stride + (e - r * D), nan);
        }
        if (lse)
            for (int r = (int)threadIdx.x; r < block_rows; r += (int)blockDim.x) lse[(long long)pair * Tq + q0 + r] = nan;
        return;
    }
    const int offset = key_time - Tq;
    const int last = offset + q0 + block_rows - 1; // the last key any query of the block sees
    const int ksteps = D / 16;
    const float scale = __fdiv_rn(1.0f, __fsqrt_rn((float)D));

    // This lane's two rows (g and g + 8 of the warp's 16) and the last key each sees, min(offset + row, last):
    // padding rows past Tq see every key up to `last` (finite, never stored). Kept as one live value (row g's
    // position) and derived where used: registers are what limits the blocks an SM holds.
    const int row_lo = q0 + 16 * warp + g;
    const int position_lo = offset + row_lo;

    attention_mma_stage(qs, q + q_head, q0, Tq, row_stride, D, stride);
    attention_mma_stage(ks, k + k_head, 0, last + 1, row_stride, D, stride);
    attention_mma_stage(vs, v + k_head, 0, last + 1, row_stride, D, stride);
    cp_async_commit_group();
    cp_async_wait_group<0>();
    __syncthreads(); // Q and key tile 0 visible to every warp

    unsigned qf[Bound / 16][4];
#pragma unroll
    for (int kk = 0; kk < Bound / 16; kk++)
        if (kk < ksteps) ldmatrix_x4(qf[kk], &qs[(16 * warp + lane % 16) * stride + 16 * kk + (lane / 16) * 8]);
    __syncthreads(); // every warp holds its Q fragments before key tile 1 overwrites the Q tile

    float acc[Bound / 8][4];
#pragma unroll
    for (int n = 0; n < Bound / 8; n++)
        acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    float m_lo = attention_mma_minus_infinity(), m_hi = attention_mma_minus_infinity(), l_lo = 0.0f, l_hi = 0.0f;

    for (int tile = 0, k0 = 0; k0 <= last; tile++, k0 += PHI2_ATTENTION_MMA_KEYS)
    {
        const T* kt = ks + (tile % 2) * tile_elements;
        const T* vt = vs + (tile % 2) * tile_elements;
        const int k1 = k0 + PHI2_ATTENTION_MMA_KEYS;
        if (k1 <= last)
        {
            int next = (tile + 1) % 2;
            attention_mma_stage(ks + next * tile_elements, k + k_head, k1, last + 1, row_stride, D, stride);
            attention_mma_stage(vs + next * tile_elements, v + k_head, k1, last + 1, row_stride, D, stride);
            cp_async_commit_group();
            cp_async_wait_group<1>(); // this tile's group landed; the next one may still be in flight
        }
        else
        {
            cp_async_wait_group<0>();
        }
        __syncthreads(); // every thread's copies of this tile visible

        // Warp-uniform: a tile wholly above this warp's diagonal adds nothing (every p would be 0).
        if (k0 <= attention_mma_min(position_lo - g + 15, last))
        {
            // S = Q K^T: 8 n-tiles of 8 keys; ldmatrix_x4 gives the B fragments of n-tiles j and j + 1 for one k-step.
            float s[PHI2_ATTENTION_MMA_KEYS / 8][4];
#pragma unroll
            for (int j = 0; j < PHI2_ATTENTION_MMA_KEYS / 8; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < Bound / 16; kk++)
            {
                if (kk >= ksteps) continue;
#pragma unroll
                for (int j = 0; j < PHI2_ATTENTION_MMA_KEYS / 8; j += 2)
                {
                    unsigned kf[4];
                    ldmatrix_x4(kf, &kt[(8 * j + lane % 8 + (lane / 16) * 8) * stride + 16 * kk + (lane / 8 % 2) * 8]);
                    Ops::mma(s[j], qf[kk], &kf[0]);
                    Ops::mma(s[j + 1], qf[kk], &kf[2]);
                }
            }

            // Scale, mask where the tile crosses the warp's diagonal, and the row maxima over the row's 4 lanes.
            const bool masked = k0 + PHI2_ATTENTION_MMA_KEYS - 1 > attention_mma_min(position_lo - g, last); // past the warp's first row's key
            float max_lo = attention_mma_minus_infinity(), max_hi = attention_mma_minus_infinity();
#pragma unroll
            for (int j = 0; j < PHI2_ATTENTION_MMA_KEYS / 8; j++)
            {
                int key = k0 + 8 * j + 2 * t;
#pragma unroll
                for (int e = 0; e < 4; e++)
                {
                    int kj = key + (e & 1);
                    bool visible = !masked || kj <= attention_mma_min(e < 2 ? position_lo : position_lo + 8, last);
                    s[j][e] = visible ? s[j][e] * scale : attention_mma_minus_infinity();
                }
                max_lo = fmaxf(max_lo, fmaxf(s[j][0], s[j][1]));
                max_hi = fmaxf(max_hi, fmaxf(s[j][2], s[j][3]));
            }
            max_lo = fmaxf(max_lo, __shfl_xor_sync(0xffffffffu, max_lo, 1));
            max_lo = fmaxf(max_lo, __shfl_xor_sync(0xffffffffu, max_lo, 2));
            max_hi = fmaxf(max_hi, __shfl_xor_sync(0xffffffffu, max_hi, 1));
            max_hi = fmaxf(max_hi, __shfl_xor_sync(0xffffffffu, max_hi, 2));
            // Finite: key 0 (in tile 0, which every warp computes) is visible to every row.
            const float new_lo = fmaxf(m_lo, max_lo), new_hi = fmaxf(m_hi, max_hi);
            const float alpha_lo = expf(m_lo - new_lo), alpha_hi = expf(m_hi - new_hi); // 0 on the first tile
            m_lo = new_lo;
            m_hi = new_hi;
            // P = exp(s - m), rounded to the dtype straight into the A fragments of P V (k-step kk2 = n-tiles 2 kk2 and
            // 2 kk2 + 1: the accumulator layout is the A fragment's), so only half as many registers hold it; the row
            // sums take the fp32 values.
            float sum_lo = 0.0f, sum_hi = 0.0f;
            unsigned pf[PHI2_ATTENTION_MMA_KEYS / 16][4];
#pragma unroll
            for (int j = 0; j < PHI2_ATTENTION_MMA_KEYS / 8; j++)
            {
                float p0 = expf(s[j][0] - new_lo); // masked: exp(-Inf) = 0
                float p1 = expf(s[j][1] - new_lo);
                float p2 = expf(s[j][2] - new_hi);
                float p3 = expf(s[j][3] - new_hi);
                sum_lo += p0 + p1;
                sum_hi += p2 + p3;
                pf[j / 2][(j % 2) * 2] = Ops::pack(p0, p1);
                pf[j / 2][(j % 2) * 2 + 1] = Ops::pack(p2, p3);
            }
            l_lo = l_lo * alpha_lo + sum_lo; // this lane's part of the row sum
            l_hi = l_hi * alpha_hi + sum_hi;
#pragma unroll
            for (int n = 0; n < Bound / 8; n++)
            {
                acc[n][0] *= alpha_lo;
                acc[n][1] *= alpha_lo;
                acc[n][2] *= alpha_hi;
                acc[n][3] *= alpha_hi;
            }

            // acc += P V: ldmatrix_x4_trans gives the B fragments of d-tiles n and n + 1 for 16 keys.
#pragma unroll
            for (int kk2 = 0; kk2 < PHI2_ATTENTION_MMA_KEYS / 16; kk2++)
            {
#pragma unroll
                for (int n = 0; n < Bound / 8; n += 2)
                {
                    if (n >= D / 8) continue;
                    unsigned vf[4];
                    ldmatrix_x4_trans(vf, &vt[(16 * kk2 + lane % 16) * stride + 8 * n + (lane / 16) * 8]);
                    Ops::mma(acc[n], pf[kk2], &vf[0]);
                    Ops::mma(acc[n + 1], pf[kk2], &vf[2]);
                }
            }
        }
        __syncthreads(); // every warp done with this tile's buffers before the next iteration refills them
    }

    l_lo += __shfl_xor_sync(0xffffffffu, l_lo, 1);
    l_lo += __shfl_xor_sync(0xffffffffu, l_lo, 2);
    l_hi += __shfl_xor_sync(0xffffffffu, l_hi, 1);
    l_hi += __shfl_xor_sync(0xffffffffu, l_hi, 2);
    const float inverse_lo = 1.0f / l_lo, inverse_hi = 1.0f / l_hi;
    T* out_head = out + (((long long)((int)blockIdx.x / H) * Tq * H + (int)blockIdx.x % H) * D);
#pragma unroll
    for (int n = 0; n < Bound / 8; n++)
    {
        if (n >= D / 8) continue;
        int d = 8 * n + 2 * t;
        if (row_lo < Tq)
        {
            long long o = (long long)row_lo * row_stride + d;
            store<Dt>(out_head, o, acc[n][0] * inverse_lo);
            store<Dt>(out_head, o + 1, acc[n][1] * inverse_lo);
        }
        if (row_lo + 8 < Tq)
        {
            long long o = (long long)(row_lo + 8) * row_stride + d;
            store<Dt>(out_head, o, acc[n][2] * inverse_hi);
            store<Dt>(out_head, o + 1, acc[n][3] * inverse_hi);
        }
    }
    if (lse && t == 0)
    {
        if (row_lo < Tq) lse[(long long)pair * Tq + row_lo] = m_lo + logf(l_lo);
        if (row_lo + 8 < Tq) lse[(long long)pair * Tq + row_lo + 8] = m_hi + logf(l_hi);
    }
}

// Entry points: attention_mma_{dtype}_d{bound} (Tk = the capacity, no key times) and cached_attention_mma_{dtype}_d{bound}.
PHI2_KERNEL void attention_mma_bf16_d32(const bf16_t* q, const bf16_t* k, const bf16_t* v, bf16_t* out, float* lse, int Tq, int Tk, int H, int D)
{
    attention_mma_forward<dtype_bf16, 32>(q, k, v, nullptr, out, lse, Tq, Tk, Tk, H, D);
}

PHI2_KERNEL void attention_mma_bf16_d64(const bf16_t* q, const bf16_t* k, const bf16_t* v, bf16_t* out, float* lse, int Tq, int Tk, int H, int D)
{
    attention_mma_forward<dtype_bf16, 64>(q, k, v, nullptr, out, lse, Tq, Tk, Tk, H, D);
}

PHI2_KERNEL void attention_mma_bf16_d80(const bf16_t* q, const bf16_t* k, const bf16_t* v, bf16_t* out, float* lse, int Tq, int Tk, int H, int D)
{
    attention_mma_forward<dtype_bf16, 80>(q, k, v, nullptr, out, lse, Tq, Tk, Tk, H, D);
}

PHI2_KERNEL void attention_mma_bf16_d128(const bf16_t* q, const bf16_t* k, const bf16_t* v, bf16_t* out, float* lse, int Tq, int Tk, int H, int D)
{
    attention_mma_forward<dtype_bf16, 128>(q, k, v, nullptr, out, lse, Tq, Tk, Tk, H, D);
}

PHI2_KERNEL void attention_mma_f16_d32(const f16_t* q, const f16_t* k, const f16_t* v, f16_t* out, float* lse, int Tq, int Tk, int H, int D)
{
    attention_mma_forward<dtype_f16, 32>(q, k, v, nullptr, out, lse, Tq, Tk, Tk, H, D);
}

PHI2_KERNEL void attention_mma_f16_d64(const f16_t* q, const f16_t* k, const f16_t* v, f16_t* out, float* lse, int Tq, int Tk, int H, int D)
{
    attention_mma_forward<dtype_f16, 64>(q, k, v, nullptr, out, lse, Tq, Tk, Tk, H, D);
}

PHI2_KERNEL void attention_mma_f16_d80(const f16_t* q, const f16_t* k, const f16_t* v, f16_t* out, float* lse, int Tq, int Tk, int H, int D)
{
    attention_mma_forward<dtype_f16, 80>(q, k, v, nullptr, out, lse, Tq, Tk, Tk, H, D);
}

PHI2_KERNEL void attention_mma_f16_d128(const f16_t* q, const f16_t* k, const f16_t* v, f16_t* out, float* lse, int Tq, int Tk, int H, int D)
{
    attention_mma_forward<dtype_f16, 128>(q, k, v, nullptr, out, lse, Tq, Tk, Tk, H, D);
}

PHI2_KERNEL void cached_attention_mma_bf16_d32(const bf16_t* q, const bf16_t* key_cache, const bf16_t* value_cache, const int* row_key_times,
                                               bf16_t* out, float* lse, int Tq, int key_time, int Tmax, int H, int D)
{
    attention_mma_forward<dtype_bf16, 32>(q, key_cache, value_cache, row_key_times, out, lse, Tq, key_time, Tmax, H, D);
}

PHI2_KERNEL void cached_attention_mma_bf16_d64(const bf16_t* q, const bf16_t* key_cache, const bf16_t* value_cache, const int* row_key_times,
                                               bf16_t* out, float* lse, int Tq, int key_time, int Tmax, int H, int D)
{
    attention_mma_forward<dtype_bf16, 64>(q, key_cache, value_cache, row_key_times, out, lse, Tq, key_time, Tmax, H, D);
}

PHI2_KERNEL void cached_attention_mma_bf16_d80(const bf16_t* q, const bf16_t* key_cache, const bf16_t* value_cache, const int* row_key_times,
                                               bf16_t* out, float* lse, int Tq, int key_time, int Tmax, int H, int D)
{
    attention_mma_forward<dtype_bf16, 80>(q, key_cache, value_cache, row_key_times, out, lse, Tq, key_time, Tmax, H, D);
}

PHI2_KERNEL void cached_attention_mma_bf16_d128(const bf16_t* q, const bf16_t* key_cache, const bf16_t* value_cache, const int* row_key_times,
                                                bf16_t* out, float* lse, int Tq, int key_time, int Tmax, int H, int D)
{
    attention_mma_forward<dtype_bf16, 128>(q, key_cache, value_cache, row_key_times, out, lse, Tq, key_time, Tmax, H, D);
}

PHI2_KERNEL void cached_attention_mma_f16_d32(const f16_t* q, const f16_t* key_cache, const f16_t* value_cache, const int* row_key_times,
                                              f16_t* out, float* lse, int Tq, int key_time, int Tmax, int H, int D)
{
    attention_mma_forward<dtype_f16, 32>(q, key_cache, value_cache, row_key_times, out, lse, Tq, key_time, Tmax, H, D);
}

PHI2_KERNEL void cached_attention_mma_f16_d64(const f16_t* q, const f16_t* key_cache, const f16_t* value_cache, const int* row_key_times,
                                              f16_t* out, float* lse, int Tq, int key_time, int Tmax, int H, int D)
{
    attention_mma_forward<dtype_f16, 64>(q, key_cache, value_cache, row_key_times, out, lse, Tq, key_time, Tmax, H, D);
}

PHI2_KERNEL void cached_attention_mma_f16_d80(const f16_t* q, const f16_t* key_cache, const f16_t* value_cache, const int* row_key_times,
                                              f16_t* out, float* lse, int Tq, int key_time, int Tmax, int H, int D)
{
    attention_mma_forward<dtype_f16, 80>(q, key_cache, value_cache, row_key_times, out, lse, Tq, key_time, Tmax, H, D);
}

PHI2_KERNEL void cached_attention_mma_f16_d128(const f16_t* q, const f16_t* key_cache, const f16_t* value_cache, const int* row_key_times,
                                               f16_t* out, float* lse, int Tq, int key_time, int Tmax, int H, int D)
{
    attention_mma_forward<dtype_f16, 128>(q, key_cache, value_cache, row_key_times, out, lse, Tq, key_time, Tmax, H, D);
}
