// attention_mma_backward.cu - the causal attention backward of attention.cu on tensor cores (FlashAttention-2's
// arithmetic, without its atomics), for bf16 (the engine's GPU dtype) and f16 (for the device checks). The same
// contract as attention_backward_{dtype} (attention.cu's header: q and dO [B, Tq, H, D], k and v [B, Tk, H, D],
// Tk >= Tq, query i at position Tk - Tq + i, scale = 1 / sqrt(D), lse and delta fp32 [B, H, Tq] (delta from
// attention_backward_delta_{dtype}, read only when dq or dk is wanted), dq [B, Tq, H, D], dk and dv [B, Tk, H, D]
// each written (=) or null (not needed)), for D a multiple of 16 in 16..128 and dO, q, k, v 16-byte aligned
// (AttentionKernels picks this kernel or the SIMT one from the shapes, dtype and pointers):
//   dv_j = sum_i p_ij dO_i;  dp_ij = dO_i . v_j;  ds_ij = (dp_ij - delta_i) * p_ij * scale
//   dk_j = sum_i ds_ij q_i;  dq_i = sum_j ds_ij k_j;  p_ij = exp(s_ij * scale - lse_i), s_ij = q_i . k_j
//
// Kernels, one per head-dim bound (the largest D it takes; its fragment and accumulator arrays are sized to it, so a
// small D does not pay D = 128's registers): bound 32 (D 16, 32), 64 (48, 64), 80 (80), 128 (96, 112, 128).
//   attention_mma_backward_{bf16,f16}_d{32,64,80,128}(dout, q, k, v, lse, delta, dq, dk, dv, Tq, Tk, H, D)
//       grid (B * H, key_tiles + query_tiles), block (128: 4 warps), key_tiles = ceil(Tk / 64) when dk or dv is
//       wanted (else 0), query_tiles = ceil(Tq / 64) when dq is (else 0); S = the rows streamed per step, 32 at
//       bounds 32, 64 and 128 and 16 at bound 80, chosen by NVRTC's registers and the occupancy they allow without a
//       spill (resources.tsv; sm_90: bound 32 121 registers, 4 blocks an SM; 64: 165, 3; 80: 159, 3 (S = 32 took 212,
//       2 blocks); 128: 251, 2 (S = 16 saves no block)); the key blocks' dk and dv accumulators, D / 2 fp32 registers
//       each per lane, are what a larger bound pays for;
//       dynamic shared memory (2 * 64 + 4 * S) * (D + 8) 16-bit elements + 4 * S floats (34,048 bytes at D = 80,
//       70,144 at D = 128; above 48 KiB the device opts the kernel in): the block's two own 64-row tiles, two
//       buffers each of the two streamed tiles, and two buffers of S lse and delta values (key blocks only). Rows are
//       padded by 8 elements (16 bytes) so the 8 rows one ldmatrix reads fall in different banks.
//       Two kinds of block in one grid, as attention_backward_{dtype}; each warp owns 16 rows of the block's 64:
//       - blockIdx.y < key_tiles: key tile y (keys k0 .. k0 + 63, the tiles with the most queries first). Copies
//         its K and V once, then walks the query tiles of S rows from query max(0, k0 - (Tk - Tq)) on, the next
//         one's Q and dO copied by cp.async (double buffering) and its lse and delta stored beside them while this
//         one is used. Each warp computes S^T = K Q^T and dP^T = V dO^T (16 keys x S queries, fp32, mma.m16n8k16
//         over D / 16 k-steps, fragments by ldmatrix), P^T and dS^T in fp32 registers (masked only in the tiles that
//         cross the warp's diagonal; queries past Tq carry lse = +Inf and delta = 0, so their p is 0), then, with
//         P^T and dS^T rounded to the dtype in registers as A fragments (their accumulator layout is the A
//         fragment's), dv += P^T dO and dk += dS^T Q (dO's and Q's fragments by ldmatrix.trans) into fp32
//         registers. Writes dk and dv (=) at the end; dP^T and dk are skipped when dk is null.
//       - otherwise query tile (counted from the end: the tiles with the most keys first): copies its Q and dO once,
//         walks the key tiles of S rows up to its last query's last key (K and V double-buffered by cp.async); each
//         warp computes S = Q K^T and dP = dO V^T (16 queries x S keys), P and dS as above, and dq += dS K
//         (K's fragments by ldmatrix.trans); tiles wholly above the warp's diagonal are skipped. Writes dq (=).
//       Rows past Tq or Tk are copied as zeros (cp.async's zero fill), never read from global memory.
//       Tq = 0 with Tk > 0 writes dk = dv = 0 (nothing attends), as the CPU does.
// Why two kinds of block rather than FlashAttention-2's one (each key tile also adding its dS K into dq with fp32
// atomicAdd): the result does not depend on block scheduling (run to run, and emulator to GPU: run twice, bitwise
// equal), dq needs no fp32 [B, Tq, H, D] scratch, no zeroing and no conversion pass, and both kinds run in one
// launch. The price is recomputing S and dP in the query blocks: 7 products of 2 D flops per visible (query, key) pair
// instead of FA2's 5 (+40 % tensor-core flops), and the query blocks' second read of K and V (once per query tile that
// sees them, mostly from L2). FA2's price instead: an fp32 atomicAdd per dq element per key tile that sees its query
// (B * Tq * H * D * Tk / 64 / 2 of them, causal), an fp32 dq scratch zeroed before and rounded to the dtype after,
// and a result that varies run to run. Which is faster on a GPU is not measured yet.
// Numerics against the fp32 reference (CpuAttention): S and dP are fp32 sums of exact 16-bit products; P and dS are
// fp32 and rounded to the dtype once before they feed the products (relative error at most 2^-8 in bf16, 2^-11 in
// f16 per element, so dv_j moves by at most that times sum_i p_ij |dO_i|, and dk, dq by that times sum |ds| |q| or |k|);
// each gradient is rounded once on store. The key blocks' S^T = K Q^T and the query blocks' S = Q K^T hold the same
// products; the emulator sums them in the same (d) order, a GPU's mma may not, so on a GPU dq's P and dk's P agree to
// fp32 rounding rather than bit for bit (each launch is still deterministic).
// Bytes a launch moves (unique): dO, q, k, v, lse, and delta when dq or dk is wanted, read; dq, dk, dv written as
// wanted (K and V are read again by every query tile that sees them, Q and dO by every key tile: from L2).
// Flops per visible (query, key) pair, on tensor cores: 8 D in key blocks (4 D with dv alone), 6 D in query blocks
// (the masked triangle of a diagonal tile is computed and discarded); about 6 SIMT flops a pair form P and dS in each
// kind of block.
#include "common.cuh"

#define PHI2_ATTENTION_BACKWARD_ROWS 64
#define PHI2_ATTENTION_BACKWARD_PAD 8

// The mma and the fragment packing of each 16-bit dtype.
template <typename Dt> struct attention_backward_mma_ops;
template <> struct attention_backward_mma_ops<dtype_bf16>
{
    static PHI2_DEVICE void mma(float c[4], const unsigned a[4], const unsigned b[2]) { mma_m16n8k16_bf16(c, a, b); }
    static PHI2_DEVICE unsigned pack(float lo, float hi) { return pack_bf16x2(lo, hi); }
};
template <> struct attention_backward_mma_ops<dtype_f16>
{
    static PHI2_DEVICE void mma(float c[4], const unsigned a[4], const unsigned b[2]) { mma_m16n8k16_f16(c, a, b); }
    static PHI2_DEVICE unsigned pack(float lo, float hi) { return pack_f16x2(lo, hi); }
};

// Rows [row0, row0 + rows) of one head (`head` points at its row 0; rows row_stride elements apart) into a shared
// tile (row stride `stride`) by cp.async, 16 bytes a copy; rows at or past `limit` become zeros and are not read.
template <typename T>
PHI2_DEVICE void attention_backward_stage(T* tile, const T* head, int row0, int rows, int limit, long long row_stride, int D,
                                          int stride)
{
    const int chunks = D / 8;
    for (int c = (int)threadIdx.x; c < rows * chunks; c += (int)blockDim.x)
    {
        int r = c / chunks, x = c - r * chunks, row = row0 + r;
        bool read = row < limit;
        cp_async_cg_16_or_zero(tile + r * stride + x * 8, head + (long long)(read ? row : 0) * row_stride + x * 8, read);
    }
}

// c (16 x N, fp32, the accumulator layout: n-tile j in c[j]) += A B^T over one warp: A the 16 rows of a shared tile at
// `a`, B the N rows at `b` (both row-major, D columns, row stride `stride`); D / 16 k-steps of mma.m16n8k16.
// ldmatrix_x4 gives A's fragment of a k-step, and the B fragments of n-tiles j and j + 1.
template <typename Ops, int N, int Bound, typename T>
PHI2_DEVICE void attention_backward_rows_by_rows(float c[N / 8][4], const T* a, const T* b, int stride, int D, int lane)
{
#pragma unroll
    for (int kk = 0; kk < Bound / 16; kk++)
    {
        if (kk >= D / 16) continue;
        unsigned af[4];
        ldmatrix_x4(af, &a[(lane % 16) * stride + 16 * kk + (lane / 16) * 8]);
#pragma unroll
        for (int j = 0; j < N / 8; j += 2)
        {
            unsigned bf[4];
            ldmatrix_x4(bf, &b[(8 * j + lane % 8 + (lane / 16) * 8) * stride + 16 * kk + (lane / 8 % 2) * 8]);
            Ops::mma(c[j], af, &bf[0]);
            Ops::mma(c[j + 1], af, &bf[2]);
        }
    }
}

// acc (16 x D, fp32, d-tile n in acc[n]) += P B over one warp: P the 16 x N scores in the accumulator layout (n-tile j
// in p[j]), rounded to the dtype as A fragments (k-step kk = n-tiles 2 kk and 2 kk + 1: the accumulator layout is the A
// fragment's); B the N rows of a shared tile at `b` (row-major, D columns), whose fragments ldmatrix_x4_trans gives for
// d-tiles n and n + 1.
template <typename Ops, int N, int Bound, typename T>
PHI2_DEVICE void attention_backward_scores_by_rows(float acc[Bound / 8][4], const float p[N / 8][4], const T* b, int stride,
                                                   int D, int lane)
{
#pragma unroll
    for (int kk = 0; kk < N / 16; kk++)
    {
        unsigned pf[4];
        pf[0] = Ops::pack(p[2 * kk][0], p[2 * kk][1]);
        pf[1] = Ops::pack(p[2 * kk][2], p[2 * kk][3]);
        pf[2] = Ops::pack(p[2 * kk + 1][0], p[2 * kk + 1][1]);
        pf[3] = Ops::pack(p[2 * kk + 1][2], p[2 * kk + 1][3]);
#pragma unroll
        for (int n = 0; n < Bound / 8; n += 2)
        {
            if (n >= D / 8) continue;
            unsigned bf[4];
            ldmatrix_x4_trans(bf, &b[(16 * kk + lane % 16) * stride + 8 * n + (lane / 16) * 8]);
            Ops::mma(acc[n], pf, &bf[0]);
            Ops::mma(acc[n + 1], pf, &bf[2]);
        }
    }
}

// Rows row_lo and row_lo + 8 of acc (16 x D, the accumulator layout) to out (rows row_stride apart from `head`), each
// rounded once; rows at or past `limit` are not stored.
template <typename Dt, int Bound>
PHI2_DEVICE void attention_backward_store(typename Dt::type* out, long long head, long long row_stride, int row_lo, int limit,
                                          const float acc[Bound / 8][4], int D, int t)
{
#pragma unroll
    for (int n = 0; n < Bound / 8; n++)
    {
        if (n >= D / 8) continue;
        int d = 8 * n + 2 * t;
        if (row_lo < limit)
        {
            long long o = head + (long long)row_lo * row_stride + d;
            store<Dt>(out, o, acc[n][0]);
            store<Dt>(out, o + 1, acc[n][1]);
        }
        if (row_lo + 8 < limit)
        {
            long long o = head + (long long)(row_lo + 8) * row_stride + d;
            store<Dt>(out, o, acc[n][2]);
            store<Dt>(out, o + 1, acc[n][3]);
        }
    }
}

template <typename Dt, int Bound, int S>
PHI2_DEVICE void attention_mma_backward(const typename Dt::type* dout, const typename Dt::type* q, const typename Dt::type* k,
                                        const typename Dt::type* v, const float* lse, const float* delta, typename Dt::type* dq,
                                        typename Dt::type* dk, typename Dt::type* dv, int Tq, int Tk, int H, int D)
{
    typedef typename Dt::type T;
    typedef attention_backward_mma_ops<Dt> Ops;
    PHI2_DYNAMIC_SHARED(T, shared);
    const int stride = D + PHI2_ATTENTION_BACKWARD_PAD;
    const int own_elements = PHI2_ATTENTION_BACKWARD_ROWS * stride, stream_elements = S * stride;
    T* own_k_or_q = shared;                        // key block: K; query block: Q
    T* own_v_or_do = own_k_or_q + own_elements;    // key block: V; query block: dO
    T* stream_q_or_k = own_v_or_do + own_elements; // two buffers (+0, +stream_elements); key block: Q; query block: K
    T* stream_do_or_v = stream_q_or_k + 2 * stream_elements; // likewise; key block: dO; query block: V
    float* lse_s = reinterpret_cast<float*>(stream_do_or_v + 2 * stream_elements); // two buffers of S (key blocks)
    float* delta_s = lse_s + 2 * S; // likewise

    const int pair = (int)blockIdx.x, b = pair / H, h = pair - b * H;
    const long long row_stride = (long long)H * D;
    const long long q_head = ((long long)b * Tq * H + h) * D, k_head = ((long long)b * Tk * H + h) * D;
    const long long lse_head = (long long)pair * Tq;
    const int warp = (int)threadIdx.x / 32, lane = (int)threadIdx.x % 32, g = lane >> 2, t = lane % 4;
    const int offset = Tk - Tq;
    const float scale = __fdiv_rn(1.0f, __fsqrt_rn((float)D));
    const float infinity = __uint_as_float(0x7f800000u);
    const int key_tiles = (dk || dv) ? (Tk + PHI2_ATTENTION_BACKWARD_ROWS - 1) / PHI2_ATTENTION_BACKWARD_ROWS : 0;
    const int own_warp = 16 * warp; // the warp's first row in the own tiles

    float acc_dk_or_dq[Bound / 8][4], acc_dv[Bound / 8][4];
#pragma unroll
    for (int n = 0; n < Bound / 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc_dk_or_dq[n][e] = acc_dv[n][e] = 0.0f;

    if ((int)blockIdx.y < key_tiles)
    {
        // Key tile: acc_dk_or_dq = the warp's dk rows, acc_dv = its dv rows. This lane's keys: key_lo and key_lo + 8.
        const int k0 = (int)blockIdx.y * PHI2_ATTENTION_BACKWARD_ROWS;
        const int key_lo = k0 + own_warp + g, warp_first_key = k0 + own_warp, warp_last_key = warp_first_key + 15;
        const bool want_ds = dk != nullptr;
        const int first_query = k0 - offset > 0 ? k0 - offset : 0;
        const int query_tiles = (Tq - first_query + S - 1) / S;
        attention_backward_stage(own_k_or_q, k + k_head, k0, PHI2_ATTENTION_BACKWARD_ROWS, Tk, row_stride, D, stride);
        attention_backward_stage(own_v_or_do, v + k_head, k0, PHI2_ATTENTION_BACKWARD_ROWS, Tk, row_stride, D, stride);
        attention_backward_stage(stream_q_or_k, q + q_head, first_query, S, Tq, row_stride, D, stride);
        attention_backward_stage(stream_do_or_v, dout + q_head, first_query, S, Tq, row_stride, D, stride);
        cp_async_commit_group();
        for (int i = (int)threadIdx.x; i < S; i += (int)blockDim.x)
        {
            bool in = first_query + i < Tq;
            lse_s[i] = in ? lse[lse_head + first_query + i] : infinity; // exp(s - Inf) = 0: padding queries add nothing
            delta_s[i] = in && want_ds ? delta[lse_head + first_query + i] : 0.0f;
        }

        for (int tile = 0; tile < query_tiles; tile++)
        {
            const int q0 = first_query + tile * S, buffer = tile % 2;
            const T* qt = stream_q_or_k + buffer * stream_elements;
            const T* dot = stream_do_or_v + buffer * stream_elements;
            const float* lse_t = lse_s + buffer * S;
            const float* delta_t = delta_s + buffer * S;
            if (tile + 1 < query_tiles)
            {
                const int next = 1 - buffer, q1 = q0 + S;
                attention_backward_stage(stream_q_or_k + next * stream_elements, q + q_head, q1, S, Tq, row_stride, D, stride);
                attention_backward_stage(stream_do_or_v + next * stream_elements, dout + q_head, q1, S, Tq, row_stride, D, stride);
                cp_async_commit_group();
                // Plain stores: visible to the block after the barrier below; the buffer was last read before the
                // previous iteration's closing barrier.
                for (int i = (int)threadIdx.x; i < S; i += (int)blockDim.x)
                {
                    bool in = q1 + i < Tq;
                    lse_s[next * S + i] = in ? lse[lse_head + q1 + i] : infinity;
                    delta_s[next * S + i] = in && want_ds ? delta[lse_head + q1 + i] : 0.0f;
                }
                cp_async_wait_group<1>(); // this tile's group (and K's, V's) landed; the next one may still be in flight
            }
            else
            {
                cp_async_wait_group<0>();
            }
            __syncthreads(); // every thread's copies and stores of this tile visible

            // Warp-uniform: a query tile that sees none of the warp's keys (its last query before the first key) adds
            // nothing.
            if (offset + q0 + S - 1 >= warp_first_key)
            {
                float s[S / 8][4], dp[S / 8][4];
#pragma unroll
                for (int j = 0; j < S / 8; j++)
                    s[j][0] = s[j][1] = s[j][2] = s[j][3] = dp[j][0] = dp[j][1] = dp[j][2] = dp[j][3] = 0.0f;
                attention_backward_rows_by_rows<Ops, S, Bound>(s, own_k_or_q + own_warp * stride, qt, stride, D, lane);
                if (want_ds) attention_backward_rows_by_rows<Ops, S, Bound>(dp, own_v_or_do + own_warp * stride, dot, stride, D, lane);

                // s[j][e]: key key_lo (e < 2) or key_lo + 8, query q0 + 8 j + 2 t + (e & 1). Mask only where the tile
                // crosses the warp's diagonal (its first query does not see the warp's last key).
                const bool masked = offset + q0 < warp_last_key;
#pragma unroll
                for (int j = 0; j < S / 8; j++)
                {
#pragma unroll
                    for (int e = 0; e < 4; e++)
                    {
                        int i = 8 * j + 2 * t + (e & 1), kj = key_lo + (e < 2 ? 0 : 8);
                        bool visible = !masked || kj <= offset + q0 + i;
                        float p = visible ? expf(s[j][e] * scale - lse_t[i]) : 0.0f;
                        dp[j][e] = visible ? (dp[j][e] - delta_t[i]) * p * scale : 0.0f;
                        s[j][e] = p;
                    }
                }
                attention_backward_scores_by_rows<Ops, S, Bound>(acc_dv, s, dot, stride, D, lane);
                if (want_ds) attention_backward_scores_by_rows<Ops, S, Bound>(acc_dk_or_dq, dp, qt, stride, D, lane);
            }
            __syncthreads(); // every warp done with this tile's buffers before the next iteration refills them
        }
        cp_async_wait_group<0>(); // Tq = 0 walks no query tile: nothing is left in flight when the block ends
        if (dk) attention_backward_store<Dt, Bound>(dk, k_head, row_stride, key_lo, Tk, acc_dk_or_dq, D, t);
        if (dv) attention_backward_store<Dt, Bound>(dv, k_head, row_stride, key_lo, Tk, acc_dv, D, t);
        return;
    }

    // Query tile (counted from the end): acc_dk_or_dq = the warp's dq rows. This lane's queries: row_lo and row_lo + 8.
    const int query_tiles = (int)gridDim.y - key_tiles;
    const int q0 = (query_tiles - 1 - ((int)blockIdx.y - key_tiles)) * PHI2_ATTENTION_BACKWARD_ROWS;
    const int block_rows = Tq - q0 < PHI2_ATTENTION_BACKWARD_ROWS ? Tq - q0 : PHI2_ATTENTION_BACKWARD_ROWS;
    const int last = offset + q0 + block_rows - 1; // the last key any query of the block sees
    const int key_tiles_seen = last / S + 1;
    const int row_lo = q0 + own_warp + g, row_hi = row_lo + 8;
    const int warp_first_row = q0 + own_warp;
    const int warp_last_key = warp_first_row + 15 < Tq ? offset + warp_first_row + 15 : last;
    const int warp_first_key = warp_first_row < Tq ? offset + warp_first_row : last; // keys up to here: no mask
    // Padding rows (past Tq): lse = +Inf, so p = ds = 0, and they are never stored.
    const float lse_lo = row_lo < Tq ? lse[lse_head + row_lo] : infinity, lse_hi = row_hi < Tq ? lse[lse_head + row_hi] : infinity;
    const float delta_lo = row_lo < Tq ? delta[lse_head + row_lo] : 0.0f, delta_hi = row_hi < Tq ? delta[lse_head + row_hi] : 0.0f;

    attention_backward_stage(own_k_or_q, q + q_head, q0, PHI2_ATTENTION_BACKWARD_ROWS, Tq, row_stride, D, stride);
    attention_backward_stage(own_v_or_do, dout + q_head, q0, PHI2_ATTENTION_BACKWARD_ROWS, Tq, row_stride, D, stride);
    attention_backward_stage(stream_q_or_k, k + k_head, 0, S, last + 1, row_stride, D, stride);
    attention_backward_stage(stream_do_or_v, v + k_head, 0, S, last + 1, row_stride, D, stride);
    cp_async_commit_group();

    for (int tile = 0; tile < key_tiles_seen; tile++)
    {
        const int k0 = tile * S, buffer = tile % 2;
        const T* kt = stream_q_or_k + buffer * stream_elements;
        const T* vt = stream_do_or_v + buffer * stream_elements;
        if (tile + 1 < key_tiles_seen)
        {
            const int next = 1 - buffer, k1 = k0 + S;
            attention_backward_stage(stream_q_or_k + next * stream_elements, k + k_head, k1, S, last + 1, row_stride, D, stride);
            attention_backward_stage(stream_do_or_v + next * stream_elements, v + k_head, k1, S, last + 1, row_stride, D, stride);
            cp_async_commit_group();
            cp_async_wait_group<1>(); // this tile's group (and Q's, dO's) landed; the next one may still be in flight
        }
        else
        {
            cp_async_wait_group<0>();
        }
        __syncthreads(); // every thread's copies of this tile visible

        // Warp-uniform: a tile wholly above this warp's diagonal adds nothing (every p would be 0).
        if (k0 <= warp_last_key)
        {
            float s[S / 8][4], dp[S / 8][4];
#pragma unroll
            for (int j = 0; j < S / 8; j++)
                s[j][0] = s[j][1] = s[j][2] = s[j][3] = dp[j][0] = dp[j][1] = dp[j][2] = dp[j][3] = 0.0f;
            attention_backward_rows_by_rows<Ops, S, Bound>(s, own_k_or_q + own_warp * stride, kt, stride, D, lane);
            attention_backward_rows_by_rows<Ops, S, Bound>(dp, own_v_or_do + own_warp * stride, vt, stride, D, lane);

            // s[j][e]: query row_lo (e < 2) or row_hi, key k0 + 8 j + 2 t + (e & 1).
            const bool masked = k0 + S - 1 > warp_first_key;
#pragma unroll
            for (int j = 0; j < S / 8; j++)
            {
#pragma unroll
                for (int e = 0; e < 4; e++)
                {
                    int kj = k0 + 8 * j + 2 * t + (e & 1), row = e < 2 ? row_lo : row_hi;
                    bool visible = !masked || kj <= offset + row;
                    float p = visible ? expf(s[j][e] * scale - (e < 2 ? lse_lo : lse_hi)) : 0.0f;
                    dp[j][e] = visible ? (dp[j][e] - (e < 2 ? delta_lo : delta_hi)) * p * scale : 0.0f;
                }
            }
            attention_backward_scores_by_rows<Ops, S, Bound>(acc_dk_or_dq, dp, kt, stride, D, lane);
        }
        __syncthreads(); // every warp done with this tile's buffers before the next iteration refills them
    }
    attention_backward_store<Dt, Bound>(dq, q_head, row_stride, row_lo, Tq, acc_dk_or_dq, D, t);
}

PHI2_KERNEL void attention_mma_backward_bf16_d32(const bf16_t* dout, const bf16_t* q, const bf16_t* k, const bf16_t* v,
    const float* lse, const float* delta, bf16_t* dq, bf16_t* dk, bf16_t* dv, int Tq, int Tk, int H, int D)
{
    attention_mma_backward<dtype_bf16, 32, 32>(dout, q, k, v, lse, delta, dq, dk, dv, Tq, Tk, H, D);
}

PHI2_KERNEL void attention_mma_backward_bf16_d64(const bf16_t* dout, const bf16_t* q, const bf16_t* k, const bf16_t* v,
    const float* lse, const float* delta, bf16_t* dq, bf16_t* dk, bf16_t* dv, int Tq, int Tk, int H, int D)
{
    attention_mma_backward<dtype_bf16, 64, 32>(dout, q, k, v, lse, delta, dq, dk, dv, Tq, Tk, H, D);
}

PHI2_KERNEL void attention_mma_backward_bf16_d80(const bf16_t* dout, const bf16_t* q, const bf16_t* k, const bf16_t* v,
    const float* lse, const float* delta, bf16_t* dq, bf16_t* dk, bf16_t* dv, int Tq, int Tk, int H, int D)
{
    attention_mma_backward<dtype_bf16, 80, 16>(dout, q, k, v, lse, delta, dq, dk, dv, Tq, Tk, H, D);
}

PHI2_KERNEL void attention_mma_backward_bf16_d128(const bf16_t* dout, const bf16_t* q, const bf16_t* k, const bf16_t* v,
    const float* lse, const float* delta, bf16_t* dq, bf16_t* dk, bf16_t* dv, int Tq, int Tk, int H, int D)
{
    attention_mma_backward<dtype_bf16, 128, 32>(dout, q, k, v, lse, delta, dq, dk, dv, Tq, Tk, H, D);
}

PHI2_KERNEL void attention_mma_backward_f16_d32(const f16_t* dout, const f16_t* q, const f16_t* k, const f16_t* v,
    const float* lse, const float* delta, f16_t* dq, f16_t* dk, f16_t* dv, int Tq, int Tk, int H, int D)
{
    attention_mma_backward<dtype_f16, 32, 32>(dout, q, k, v, lse, delta, dq, dk, dv, Tq, Tk, H, D);
}

PHI2_KERNEL void attention_mma_backward_f16_d64(const f16_t* dout, const f16_t* q, const f16_t* k, const f16_t* v,
    const float* lse, const float* delta, f16_t* dq, f16_t* dk, f16_t* dv, int Tq, int Tk, int H, int D)
{
    attention_mma_backward<dtype_f16, 64, 32>(dout, q, k, v, lse, delta, dq, dk, dv, Tq, Tk, H, D);
}

PHI2_KERNEL void attention_mma_backward_f16_d80(const f16_t* dout, const f16_t* q, const f16_t* k, const f16_t* v,
    const float* lse, const float* delta, f16_t* dq, f16_t* dk, f16_t* dv, int Tq, int Tk, int H, int D)
{
    attention_mma_backward<dtype_f16, 80, 16>(dout, q, k, v, lse, delta, dq, dk, dv, Tq, Tk, H, D);
}

PHI2_KERNEL void attention_mma_backward_f16_d128(const f16_t* dout, const f16_t* q, const f16_t* k, const f16_t* v,
    const float* lse, const float* delta, f16_t* dq, f16_t* dk, f16_t* dv, int Tq, int Tk, int H, int D)
{
    attention_mma_backward<dtype_f16, 128, 32>(dout, q, k, v, lse, delta, dq, dk, dv, Tq, Tk, H, D);
}
