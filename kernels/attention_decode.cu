// attention_decode.cu - decoding through a KV cache (Tq = 1..4 queries a batch row) split over the keys
// ("flash-decoding"): the keys of each (batch row, head) are cut into chunks of 64, one block a chunk, each writing
// fp32 partials (m, l, acc) of its chunk; the last block of a (batch row, head) to finish combines the chunks' partials
// into the output. So batch 1 fills the GPU: at Phi-2's 32 heads and a 2,048-row cache, 1,024 blocks (one wave: 9
// blocks an SM fit at D = 80, on 132 SMs) where the one-block-per-32-queries cached_attention has 32; and a decode is
// one launch (the combine was a second kernel: a launch, a CUDA graph node, a layer). For bf16 (the engine's GPU dtype)
// and f16 (the device checks).
// The contract is cached_attention's (attention.cu's header): q [B, Tq, H, D], caches [B, Tmax, H, D] read in place
// (Tmax is the batch stride in rows), per-row key times I32 [B] (batch row b's query i sits at
// row_key_times[b] - Tq + i and sees keys up to there), scale = 1 / sqrt(D), out [B, Tq, H, D] of the dtype, lse
// [B, H, Tq] fp32 or null; a row's key time outside [Tq, Tmax] makes its output (and lse) NaN and reads nothing. Here
// D is a multiple of 16 in 16..128, q and the caches 16-byte aligned (AttentionKernels.Choose picks these kernels
// for Tq <= 4 and the tensor-core or SIMT cached forward otherwise).
//
// The grid depends only on (B, H, Tq, Tmax), never on the key times, which are read on the device: the decode step is
// captured in a CUDA graph and replayed token after token. Blocks past a row's key time exit at once (a 2,048-row cache
// at key time 100 runs 2 of its 32 chunks a head).
//
// Kernels (splits = ceil(Tmax / 64); partials fp32 [B * H, splits, Tq, D + 2]: a row's unnormalised acc [D], then m
// (its chunk's max score, -Inf when the row sees no key of the chunk) and l = sum exp(s - m) (0 then); counters I32
// [B * H], zero before the launch and zero again after it):
//   attention_decode_{bf16,f16}_d{32,64,80,128}(q, key_cache, value_cache, row_key_times, partials, counters, out, lse,
//                                                Tq, Tmax, H, D)
//       grid (B * H, splits), block (32: one warp), dynamic shared memory 2 * 64 * (D + 8) 16-bit elements (22,528
//       bytes at D = 80, 34,816 at D = 128): the chunk's K and V, rows padded by 8 elements so that the 8 rows one
//       ldmatrix reads fall in different banks. Register arrays sized for the head-dim bound d{bound} (as
//       attention_mma.cu's). The warp issues its whole chunk (K and V, 64 rows each, rows past the key time
//       zero-filled and not read) by cp.async, 16 bytes a copy, and loads its Q fragments from global memory while
//       they fly; then S = Q K^T and P V by mma.m16n8k16 as attention_mma does, with the Tq query rows padded to the
//       mma's 16 (rows Tq.. of A are zeros; their scores are masked), the softmax over the chunk in fp32 registers.
//       Why one warp of 64 keys a block: decode reads each K and V byte once and computes little on it, so what
//       counts is the bytes in flight, not the warps; a block holds its whole chunk in flight (20 KiB at D = 80) and
//       9 blocks fit an SM by shared memory at D = 80 (32 by the block limit), ~180 KiB in flight an SM, well past what
//       HBM's latency needs (~25 KiB an SM at 3.35 TB/s); small blocks also leave no idle warps in the last chunk.
//       The combine: each of the used = ceil(key_time / 64) blocks of a (b, h) writes its partials, fences them
//       (__threadfence) and counts itself in counters[b H + h] (atomicAdd); the block that counts last resets the
//       counter to 0 (so the next launch, or a graph's next replay, starts from zero) and combines, for each of the Tq
//       rows, by one warp: M = max_s m_s over the row's used chunks (finite: chunk 0 holds key 0, which every query
//       sees), w_s = exp(m_s - M), out = (sum_s w_s acc_s) / (sum_s w_s l_s) rounded once, lse = M + log(L). It reads
//       the partials from memory (its own chunk's too; L1 bypassed: another block wrote them) in chunk order
//       s = 0, 1, ..., so the result does not depend on which block counted last: deterministic, and bit for bit what a
//       separate combine kernel computed. A bad key time: chunk 0's block writes the NaN rows, no block counts.
// Numerics against the fp32 reference (CpuAttention): scores, the softmax, the partials and their combination fp32;
// P is rounded to the dtype before P V relative to its chunk's max (relative error 2^-9 in bf16, 2^-12 in f16 per
// probability, as attention_mma's); out rounded once on store.
// Bytes a launch moves: q once a chunk (from L2 after the first), K and V of the rows below each key time once, the
// (D + 2) * 4 bytes of partials a (row, query, head, chunk run) written once and read back once by the combining
// block, out (and lse) written, each (b, h) counter read and written. Flops: 4 * D per (query, key) pair on tensor
// cores (4x that issued: 16 mma rows for Tq <= 4), ~6 a pair for the softmax, ~3 per (chunk, d) to combine.
#include "common.cuh"

#define PHI2_ATTENTION_DECODE_KEYS 64
#define PHI2_ATTENTION_DECODE_PAD 8

// The mma and the fragment packing of each 16-bit dtype.
template <typename Dt> struct attention_decode_ops;
template <> struct attention_decode_ops<dtype_bf16>
{
    static PHI2_DEVICE void mma(float c[4], const unsigned a[4], const unsigned b[2]) { mma_m16n8k16_bf16(c, a, b); }
    static PHI2_DEVICE unsigned pack(float lo, float hi) { return pack_bf16x2(lo, hi); }
};
template <> struct attention_decode_ops<dtype_f16>
{
    static PHI2_DEVICE void mma(float c[4], const unsigned a[4], const unsigned b[2]) { mma_m16n8k16_f16(c, a, b); }
    static PHI2_DEVICE unsigned pack(float lo, float hi) { return pack_f16x2(lo, hi); }
};

PHI2_DEVICE float attention_decode_minus_infinity() { return __uint_as_float(0xff800000u); }

PHI2_DEVICE bool attention_decode_bad_key_time(int key_time, int Tq, int Tmax) { return key_time < Tq || key_time > Tmax; }

// Batch row b's out rows (and lse) of head h NaN: its key time is outside [Tq, Tmax].
template <typename Dt>
PHI2_DEVICE void attention_decode_nan_rows(typename Dt::type* out, float* lse, int b, int h, int Tq, int H, int D)
{
    const float nan = __uint_as_float(0x7fc00000u);
    for (int i = 0; i < Tq; i++)
    {
        const long long o = (((long long)b * Tq + i) * H + h) * D;
        for (int d = (int)threadIdx.x; d < D; d += 32) store<Dt>(out, o + d, nan);
        if (lse && threadIdx.x == 0) lse[((long long)b * H + h) * Tq + i] = nan;
    }
}

// Output row (b, i, h) from the first used chunks' partials, by the block's one warp, in chunk order. The partials are
// read through a volatile pointer (ld.volatile: from L2, not a stale L1 line) since other blocks wrote them.
template <typename Dt>
PHI2_DEVICE void attention_decode_combine_row(const float* partials, typename Dt::type* out, float* lse, int b, int h, int i, int used,
                                              int splits, int Tq, int H, int D)
{
    const int lane = (int)threadIdx.x;
    const volatile float* first = partials + (((long long)b * H + h) * splits * Tq + i) * (D + 2);
    const long long chunk_stride = (long long)Tq * (D + 2);
    const long long o = (((long long)b * Tq + i) * H + h) * D;

    float M = attention_decode_minus_infinity();
    for (int s = lane; s < used; s += 32) M = fmaxf(M, first[s * chunk_stride + D]);
    M = warp_max(M);
    float L = 0.0f;
    for (int s = lane; s < used; s += 32) L += expf(first[s * chunk_stride + D] - M) * first[s * chunk_stride + D + 1];
    L = warp_sum(L);
    const float inverse = 1.0f / L;
    for (int d = lane; d < D; d += 32)
    {
        float sum = 0.0f;
        for (int s = 0; s < used; s++) sum += expf(first[s * chunk_stride + D] - M) * first[s * chunk_stride + d];
        store<Dt>(out, o + d, sum * inverse);
    }
    if (lse && lane == 0) lse[((long long)b * H + h) * Tq + i] = M + logf(L);
}

// Chunk blockIdx.y of one (batch row, head) pair: its partials (m, l, acc) for each of the Tq queries; the pair's last
// chunk to finish combines them into out (and lse).
template <typename Dt, int Bound>
PHI2_DEVICE void attention_decode_chunk(const typename Dt::type* q, const typename Dt::type* key_cache,
                                        const typename Dt::type* value_cache, const int* row_key_times, float* partials,
                                        int* counters, typename Dt::type* out, float* lse, int Tq, int Tmax, int H, int D)
{
    typedef typename Dt::type T;
    typedef attention_decode_ops<Dt> Ops;
    PHI2_DYNAMIC_SHARED(T, shared);
    const int stride = D + PHI2_ATTENTION_DECODE_PAD;
    T* ks = shared;
    T* vs = ks + PHI2_ATTENTION_DECODE_KEYS * stride;

    const int pair = (int)blockIdx.x, b = pair / H, h = pair - b * H;
    const int split = (int)blockIdx.y, splits = (int)gridDim.y, k0 = split * PHI2_ATTENTION_DECODE_KEYS;
    const int key_time = row_key_times[b];
    // Block-uniform and before any barrier: a bad key time (chunk 0 writes the NaN rows) or a chunk past the key time.
    if (attention_decode_bad_key_time(key_time, Tq, Tmax))
    {
        if (split == 0) attention_decode_nan_rows<Dt>(out, lse, b, h, Tq, H, D);
        return;
    }
    if (k0 >= key_time) return;

    const long long row_stride = (long long)H * D;
    const long long k_head = ((long long)b * Tmax * H + h) * D;
    const int lane = (int)threadIdx.x, g = lane >> 2, t = lane % 4;
    const int chunks = D / 8;
    for (int c = lane; c < PHI2_ATTENTION_DECODE_KEYS * chunks; c += 32)
    {
        int r = c / chunks, x = c - r * chunks, row = k0 + r;
        bool read = row < key_time;
        long long source = k_head + (long long)(read ? row : 0) * row_stride + x * 8;
        cp_async_cg_16_or_zero(ks + r * stride + x * 8, key_cache + source, read);
        cp_async_cg_16_or_zero(vs + r * stride + x * 8, value_cache + source, read);
    }
    cp_async_commit_group();

    // Q's A fragments straight from global memory while the chunk flies: row g (< Tq) of the 16, columns 2t, 2t + 1
    // and 2t + 8, 2t + 9 of each k-step; rows 8..15 (a[1], a[3]) and rows Tq..7 are zeros.
    const int ksteps = D / 16;
    unsigned qf[Bound / 16][4];
    const unsigned* q_row = reinterpret_cast<const unsigned*>(q + (((long long)b * Tq + (g < Tq ? g : 0)) * H + h) * D);
#pragma unroll
    for (int kk = 0; kk < Bound / 16; kk++)
    {
        bool load = kk < ksteps && g < Tq;
        qf[kk][0] = load ? q_row[8 * kk + t] : 0u;
        qf[kk][2] = load ? q_row[8 * kk + t + 4] : 0u;
        qf[kk][1] = qf[kk][3] = 0u;
    }

    cp_async_wait_group<0>();
    __syncthreads(); // every lane's copies visible to the warp

    // S = Q K^T: 8 n-tiles of 8 keys; ldmatrix_x4 gives the B fragments of n-tiles j and j + 1 for one k-step.
    float s[PHI2_ATTENTION_DECODE_KEYS / 8][4];
#pragma unroll
    for (int j = 0; j < PHI2_ATTENTION_DECODE_KEYS / 8; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < Bound / 16; kk++)
    {
        if (kk >= ksteps) continue;
#pragma unroll
        for (int j = 0; j < PHI2_ATTENTION_DECODE_KEYS / 8; j += 2)
        {
            unsigned kf[4];
            ldmatrix_x4(kf, &ks[(8 * j + lane % 8 + (lane / 16) * 8) * stride + 16 * kk + (lane / 8 % 2) * 8]);
            Ops::mma(s[j], qf[kk], &kf[0]);
            Ops::mma(s[j + 1], qf[kk], &kf[2]);
        }
    }

    // Row g's scores (s[j][0..1]; s[j][2..3] are the padding rows g + 8): scale, mask past the query's position (and
    // every key for rows past Tq), and the row's max over its 4 lanes.
    const float scale = __fdiv_rn(1.0f, __fsqrt_rn((float)D));
    const int see = g < Tq ? key_time - Tq + g : -1;
    float m = attention_decode_minus_infinity();
#pragma unroll
    for (int j = 0; j < PHI2_ATTENTION_DECODE_KEYS / 8; j++)
    {
        int key = k0 + 8 * j + 2 * t;
        s[j][0] = key <= see ? s[j][0] * scale : attention_decode_minus_infinity();
        s[j][1] = key + 1 <= see ? s[j][1] * scale : attention_decode_minus_infinity();
        m = fmaxf(m, fmaxf(s[j][0], s[j][1]));
    }
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
    // A row that sees no key of this chunk (the last chunk, Tq > 1): every p = exp(-Inf - 0) = 0, l = 0, acc = 0.
    const float reference = m == attention_decode_minus_infinity() ? 0.0f : m;

    // P = exp(s - m) rounded to the dtype straight into P V's A fragments (k-step kk2 = n-tiles 2 kk2, 2 kk2 + 1;
    // rows 8..15 zero); l takes the fp32 values.
    float l = 0.0f;
    unsigned pf[PHI2_ATTENTION_DECODE_KEYS / 16][4];
#pragma unroll
    for (int j = 0; j < PHI2_ATTENTION_DECODE_KEYS / 8; j++)
    {
        float p0 = expf(s[j][0] - reference), p1 = expf(s[j][1] - reference);
        l += p0 + p1;
        pf[j / 2][(j % 2) * 2] = Ops::pack(p0, p1);
        pf[j / 2][(j % 2) * 2 + 1] = 0u;
    }
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);

    // acc = P V: ldmatrix_x4_trans gives the B fragments of d-tiles n and n + 1 for 16 keys.
    float acc[Bound / 8][4];
#pragma unroll
    for (int n = 0; n < Bound / 8; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
#pragma unroll
    for (int kk2 = 0; kk2 < PHI2_ATTENTION_DECODE_KEYS / 16; kk2++)
    {
#pragma unroll
        for (int n = 0; n < Bound / 8; n += 2)
        {
            if (n >= D / 8) continue;
            unsigned vf[4];
            ldmatrix_x4_trans(vf, &vs[(16 * kk2 + lane % 16) * stride + 8 * n + (lane / 16) * 8]);
            Ops::mma(acc[n], pf[kk2], &vf[0]);
            Ops::mma(acc[n + 1], pf[kk2], &vf[2]);
        }
    }

    float* partial = partials + (((long long)pair * splits + split) * Tq + g) * (D + 2);
    if (g < Tq)
    {
#pragma unroll
        for (int n = 0; n < Bound / 8; n++)
        {
            if (n >= D / 8) continue;
            partial[8 * n + 2 * t] = acc[n][0];
            partial[8 * n + 2 * t + 1] = acc[n][1];
        }
        if (t == 0)
        {
            partial[D] = m;
            partial[D + 1] = l;
        }
    }

    // Count this chunk in; the last of the pair's used chunks combines them all. The fence makes every lane's partials
    // visible device-wide before the count that lets another block read them; the barrier orders the lanes' fences
    // before lane 0's count (the block is one warp).
    __threadfence();
    __syncthreads();
    const int used = (key_time + PHI2_ATTENTION_DECODE_KEYS - 1) / PHI2_ATTENTION_DECODE_KEYS;
    int counted = 0;
    if (lane == 0) counted = atomicAdd(counters + pair, 1) + 1;
    counted = __shfl_sync(0xffffffffu, counted, 0);
    if (counted != used) return; // no barrier follows
    if (lane == 0) counters[pair] = 0; // no other block of this launch touches it again
    __threadfence(); // the other chunks' partials, counted before this block's count, are read after it
    for (int i = 0; i < Tq; i++) attention_decode_combine_row<Dt>(partials, out, lse, b, h, i, used, splits, Tq, H, D);
}

// Entry points: attention_decode_{dtype}_d{bound}.
PHI2_KERNEL void attention_decode_bf16_d32(const bf16_t* q, const bf16_t* key_cache, const bf16_t* value_cache, const int* row_key_times,
                                           float* partials, int* counters, bf16_t* out, float* lse, int Tq, int Tmax, int H, int D)
{
    attention_decode_chunk<dtype_bf16, 32>(q, key_cache, value_cache, row_key_times, partials, counters, out, lse, Tq, Tmax, H, D);
}

PHI2_KERNEL void attention_decode_bf16_d64(const bf16_t* q, const bf16_t* key_cache, const bf16_t* value_cache, const int* row_key_times,
                                           float* partials, int* counters, bf16_t* out, float* lse, int Tq, int Tmax, int H, int D)
{
    attention_decode_chunk<dtype_bf16, 64>(q, key_cache, value_cache, row_key_times, partials, counters, out, lse, Tq, Tmax, H, D);
}

PHI2_KERNEL void attention_decode_bf16_d80(const bf16_t* q, const bf16_t* key_cache, const bf16_t* value_cache, const int* row_key_times,
                                           float* partials, int* counters, bf16_t* out, float* lse, int Tq, int Tmax, int H, int D)
{
    attention_decode_chunk<dtype_bf16, 80>(q, key_cache, value_cache, row_key_times, partials, counters, out, lse, Tq, Tmax, H, D);
}

PHI2_KERNEL void attention_decode_bf16_d128(const bf16_t* q, const bf16_t* key_cache, const bf16_t* value_cache, const int* row_key_times,
                                            float* partials, int* counters, bf16_t* out, float* lse, int Tq, int Tmax, int H, int D)
{
    attention_decode_chunk<dtype_bf16, 128>(q, key_cache, value_cache, row_key_times, partials, counters, out, lse, Tq, Tmax, H, D);
}

PHI2_KERNEL void attention_decode_f16_d32(const f16_t* q, const f16_t* key_cache, const f16_t* value_cache, const int* row_key_times,
                                          float* partials, int* counters, f16_t* out, float* lse, int Tq, int Tmax, int H, int D)
{
    attention_decode_chunk<dtype_f16, 32>(q, key_cache, value_cache, row_key_times, partials, counters, out, lse, Tq, Tmax, H, D);
}

PHI2_KERNEL void attention_decode_f16_d64(const f16_t* q, const f16_t* key_cache, const f16_t* value_cache, const int* row_key_times,
                                          float* partials, int* counters, f16_t* out, float* lse, int Tq, int Tmax, int H, int D)
{
    attention_decode_chunk<dtype_f16, 64>(q, key_cache, value_cache, row_key_times, partials, counters, out, lse, Tq, Tmax, H, D);
}

PHI2_KERNEL void attention_decode_f16_d80(const f16_t* q, const f16_t* key_cache, const f16_t* value_cache, const int* row_key_times,
                                          float* partials, int* counters, f16_t* out, float* lse, int Tq, int Tmax, int H, int D)
{
    attention_decode_chunk<dtype_f16, 80>(q, key_cache, value_cache, row_key_times, partials, counters, out, lse, Tq, Tmax, H, D);
}

PHI2_KERNEL void attention_decode_f16_d128(const f16_t* q, const f16_t* key_cache, const f16_t* value_cache, const int* row_key_times,
                                           float* partials, int* counters, f16_t* out, float* lse, int Tq, int Tmax, int H, int D)
{
    attention_decode_chunk<dtype_f16, 128>(q, key_cache, value_cache, row_key_times, partials, counters, out, lse, Tq, Tmax, H, D);
}
