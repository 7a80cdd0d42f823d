// lora_mma.cuh - the tensor-core building blocks of the LoRA kernels (lora.cu, lora_qkv.cu) over bf16 activations:
// products of a bf16 operand (x, dy) with an fp32 one (the adapter A, B, or u, du) and of two fp32 operands, on
// mma.m16n8k16 (common.cuh) without rounding the fp32 side to bf16. One home for both files' bf16 kernels.
//
// Split precision. An fp32 value v is carried as three bf16 values, hi = bf16(v), mid = bf16(v - hi), lo = bf16(v - hi -
// mid) (each difference exact in fp32), so v = hi + mid + lo to within |v| 2^-24 or so (three 8-bit significands, the
// rounding to nearest giving each one more bit; exact for most values). A bf16 operand x is exact as it is, and a
// bf16 x bf16 product is exact in fp32, so x v = x hi + x mid + x lo is three mmas with fp32 accumulation: the sums
// are fp32-grade like the SIMT kernels', in another order. Two fp32 operands (du A in lora_down_backward) take the six
// terms hi hi + hi mid + mid hi + mid mid + hi lo + lo hi; the dropped mid lo + lo mid + lo lo are below 2^-25 |a b|
// (|mid| <= 2^-9 |v|, |lo| <= 2^-17 |v|), far under the bf16 rounding (2^-9) of the output they feed. Not exact at the
// edges: |v| above bf16's largest finite (~3.39e38) rounds hi to Inf, an Inf v gives NaN (Inf - Inf) where fp32 gave
// Inf, and parts below 2^-133 are lost to subnormal bf16: none is a value a trained adapter or a finite loss holds.
// The tensor core's own fp32 accumulation (on sm_80/sm_90 its adds are not rounded to nearest, with a few guard bits)
// differs from an FMA chain by a few fp32 ulps of the running sum: the same grade as the SIMT order change.
// f32 activations stay on the SIMT kernels (an fp32 x would need the split on both sides, 6 mmas, for no use: the
// engine's GPU dtype is bf16); f16 too: an f16 x is exact in bf16 only within bf16's 8 significant bits (f16 has 11),
// so it would need two parts and its own range handling, for kernels that serve only the device checks.
//
// Dropout (dropout.cu's mask, common.cuh's dropout_bits24 over x's flat index) zeroes dropped elements of x as they
// are staged; keep_scale multiplies the sum afterwards (sum over kept x times keep_scale, one rounding fewer per
// element than the SIMT kernels, the same mask bit for bit).
//
// Blocks are 256 threads (8 warps); fragment layouts are common.cuh's (g = lane >> 2, t = lane % 4).
#pragma once

#include "common.cuh"

#define LORA_MMA_WARPS 8
#define LORA_MMA_RANKS 16      // ranks a block (two n-tiles of 8) in the products with a rank-wide output
#define LORA_MMA_PAD 8         // 16-bit elements padding each staged row: ldmatrix's 8 rows fall in distinct banks
#define LORA_MMA_GRAD_COLUMNS 32  // weight grad: columns a block (two m-tiles)
#define LORA_MMA_GRAD_ROWS 128    // weight grad: rows a block stages a step, 16 a warp
#define LORA_MMA_DOWN_ROWS 32     // row x weight: rows a block (two m-tiles)
#define LORA_MMA_DOWN_COLUMNS 128 // row x weight: columns a block stages a step, 16 a warp
#define LORA_MMA_EXPAND_ROWS 32   // rank expand: rows a warp (two m-tiles)
#define LORA_MMA_EXPAND_COLUMNS 32 // rank expand: columns a warp (four n-tiles), 256 a block

// v = hi + mid + lo (the header's split).
PHI2_DEVICE void lora_split3(float v, bf16_t& hi, bf16_t& mid, bf16_t& lo)
{
    hi = f32_to_bf16(v);
    float rest = __fsub_rn(v, bf16_to_f32(hi));
    mid = f32_to_bf16(rest);
    lo = f32_to_bf16(__fsub_rn(rest, bf16_to_f32(mid)));
}

// The hi, mid and lo fragments (parts[0..2]) of count / 2 registers of fp32 values, v[2 q] the low half of register q.
template <int Count>
PHI2_DEVICE void lora_split_fragment(const float* v, unsigned parts[3][Count / 2])
{
    #pragma unroll
    for (int q = 0; q < Count / 2; q++)
    {
        bf16_t h0, m0, l0, h1, m1, l1;
        lora_split3(v[2 * q], h0, m0, l0);
        lora_split3(v[2 * q + 1], h1, m1, l1);
        parts[0][q] = pack_b16x2(h0, h1);
        parts[1][q] = pack_b16x2(m0, m1);
        parts[2][q] = pack_b16x2(l0, l1);
    }
}

// Eight bf16 of row n, columns c..c+7 of `left` (row stride `stride`), zero past `width` or for a row past `rows`, and
// zero where the mask drops them (threshold 0: none), as one 16-byte vector for shared memory.
PHI2_DEVICE vec16 lora_mma_load8(const bf16_t* left, long long stride, long long mask_stride, int n, int c, int rows, int width,
                                 unsigned threshold, unsigned long long seed)
{
    union { vec16 v; bf16_t e[8]; } chunk;
    const bf16_t* p = left + (long long)n * stride + c;
    if (n < rows && c + 8 <= width && aligned16(p)) chunk.v = *reinterpret_cast<const vec16*>(p);
    else
        for (int e = 0; e < 8; e++) chunk.e[e] = n < rows && c + e < width ? p[e] : (bf16_t)0;
    if (threshold != 0u && n < rows)
        for (int e = 0; e < 8; e++)
            if (dropout_bits24(seed, (long long)n * mask_stride + c + e) < threshold) chunk.e[e] = 0;
    return chunk.v;
}

// grad[c * column_stride + j * rank_stride] = (accumulate ? grad[..] : 0) + keep_scale * scaling * sum_n keep(n, c)
// left[n * left_stride + c] right[n * right_stride + j], for the block's columns [32 blockIdx.x, +32) and ranks
// [j0, j0 + 16) of `rank` (the mask over n * mask_stride + c). The block stages 128 rows x 32 columns of left (coalesced,
// masked) per step; warp w multiplies rows [16 w, +16) of it: A = left^T by ldmatrix.trans, B = right's hi, mid, lo
// fragments from global memory (L1/L2: 16 x 8 floats a lane group), 3 mmas per 16 x 8 output tile; the 8 warps'
// partial sums are then added in warp order through shared memory (deterministic, no atomics).
PHI2_DEVICE void lora_mma_weight_grad(const bf16_t* left, long long left_stride, long long mask_stride, const float* right,
                                      long long right_stride, float* grad, long long column_stride, long long rank_stride,
                                      unsigned threshold, float keep_scale, unsigned long long seed, float scaling,
                                      int accumulate, int rows, int width, int rank, int j0)
{
    const int stride = LORA_MMA_GRAD_COLUMNS + LORA_MMA_PAD;
    __shared__ vec16 staged_words[LORA_MMA_GRAD_ROWS * stride / 8];
    __shared__ float partial[LORA_MMA_WARPS][LORA_MMA_GRAD_COLUMNS][LORA_MMA_RANKS];
    bf16_t* staged = reinterpret_cast<bf16_t*>(staged_words);
    int warp = (int)(threadIdx.x >> 5), lane = (int)(threadIdx.x & 31u), g = lane >> 2, t = lane & 3;
    int c0 = (int)blockIdx.x * LORA_MMA_GRAD_COLUMNS;
    int m_tiles = width - c0 > 16 ? 2 : 1, n_tiles = rank - j0 > 8 ? 2 : 1; // the same for the whole block
    float acc[2][2][4];
    #pragma unroll
    for (int mt = 0; mt < 2; mt++)
        #pragma unroll
        for (int nt = 0; nt < 2; nt++)
            #pragma unroll
            for (int i = 0; i < 4; i++) acc[mt][nt][i] = 0.0f;
    for (int n0 = 0; n0 < rows; n0 += LORA_MMA_GRAD_ROWS)
    {
        for (int e = (int)threadIdx.x; e < LORA_MMA_GRAD_ROWS * 4; e += (int)blockDim.x)
        {
            int r = e >> 2, part = e & 3;
            *reinterpret_cast<vec16*>(staged + r * stride + 8 * part) =
                lora_mma_load8(left, left_stride, mask_stride, n0 + r, c0 + 8 * part, rows, width, threshold, seed);
        }
        __syncthreads();
        int s = n0 + 16 * warp;
        if (s < rows) // whole warps
        {
            unsigned b[2][3][2];
            #pragma unroll
            for (int nt = 0; nt < 2; nt++) if (nt < n_tiles)
            {
                float v[4];
                int j = j0 + 8 * nt + g;
                #pragma unroll
                for (int i = 0; i < 4; i++)
                {
                    int n = s + 2 * t + (i & 1) + (i >= 2 ? 8 : 0);
                    v[i] = n < rows && j < rank ? right[(long long)n * right_stride + j] : 0.0f;
                }
                lora_split_fragment<4>(v, b[nt]);
            }
            #pragma unroll
            for (int mt = 0; mt < 2; mt++) if (mt < m_tiles)
            {
                unsigned a[4];
                ldmatrix_x4_trans(a, staged + (16 * warp + (lane & 7) + 8 * (lane >> 4)) * stride + 16 * mt + 8 * ((lane >> 3) & 1));
                #pragma unroll
                for (int nt = 0; nt < 2; nt++) if (nt < n_tiles)
                    #pragma unroll
                    for (int p = 2; p >= 0; p--) mma_m16n8k16_bf16(acc[mt][nt], a, b[nt][p]);
            }
        }
        __syncthreads(); // every warp's reads of the staged rows are done
    }
    #pragma unroll
    for (int mt = 0; mt < 2; mt++)
        #pragma unroll
        for (int nt = 0; nt < 2; nt++)
            #pragma unroll
            for (int i = 0; i < 4; i++)
                partial[warp][16 * mt + g + (i >= 2 ? 8 : 0)][8 * nt + 2 * t + (i & 1)] = acc[mt][nt][i];
    __syncthreads();
    for (int o = (int)threadIdx.x; o < LORA_MMA_GRAD_COLUMNS * LORA_MMA_RANKS; o += (int)blockDim.x)
    {
        int column = o / LORA_MMA_RANKS, jj = o % LORA_MMA_RANKS, c = c0 + column, j = j0 + jj;
        if (c >= width || j >= rank) continue;
        float total = partial[0][column][jj];
        for (int w = 1; w < LORA_MMA_WARPS; w++) total += partial[w][column][jj];
        float v = __fmul_rn(__fmul_rn(total, keep_scale), scaling);
        long long at = (long long)c * column_stride + (long long)j * rank_stride;
        grad[at] = accumulate ? __fadd_rn(grad[at], v) : v;
    }
}

// out[n * out_stride + j] = out_scale * keep_scale * sum_k keep(n, k) x[n * x_stride + k] w[j * w_rank_stride + k *
// w_width_stride], for the block's rows [row0, row0 + 32) and ranks [j0, j0 + 16) of `rank` (the mask over n *
// mask_stride + k). The block stages 32 rows x 128 columns of x per step (coalesced, masked); warp w multiplies columns
// [16 w, +16) of it: A = x by ldmatrix, B = w's hi, mid, lo fragments from global memory (L1/L2), 3 mmas per 16 x 8
// output tile; the 8 warps' partial sums over their columns are added in warp order through shared memory.
PHI2_DEVICE void lora_mma_row_times_weight(const bf16_t* x, long long x_stride, long long mask_stride, const float* w,
                                           long long w_rank_stride, long long w_width_stride, float* out, long long out_stride,
                                           unsigned threshold, float keep_scale, unsigned long long seed, float out_scale,
                                           int rows, int width, int rank, int row0, int j0)
{
    const int stride = LORA_MMA_DOWN_COLUMNS + LORA_MMA_PAD;
    __shared__ vec16 staged_words[LORA_MMA_DOWN_ROWS * stride / 8];
    __shared__ float partial[LORA_MMA_WARPS][LORA_MMA_DOWN_ROWS][LORA_MMA_RANKS];
    bf16_t* staged = reinterpret_cast<bf16_t*>(staged_words);
    int warp = (int)(threadIdx.x >> 5), lane = (int)(threadIdx.x & 31u), g = lane >> 2, t = lane & 3;
    int m_tiles = rows - row0 > 16 ? 2 : 1, n_tiles = rank - j0 > 8 ? 2 : 1; // the same for the whole block
    float acc[2][2][4];
    #pragma unroll
    for (int mt = 0; mt < 2; mt++)
        #pragma unroll
        for (int nt = 0; nt < 2; nt++)
            #pragma unroll
            for (int i = 0; i < 4; i++) acc[mt][nt][i] = 0.0f;
    for (int k0 = 0; k0 < width; k0 += LORA_MMA_DOWN_COLUMNS)
    {
        for (int e = (int)threadIdx.x; e < LORA_MMA_DOWN_ROWS * LORA_MMA_DOWN_COLUMNS / 8; e += (int)blockDim.x)
        {
            int r = e / (LORA_MMA_DOWN_COLUMNS / 8), part = e % (LORA_MMA_DOWN_COLUMNS / 8);
            *reinterpret_cast<vec16*>(staged + r * stride + 8 * part) =
                lora_mma_load8(x, x_stride, mask_stride, row0 + r, k0 + 8 * part, rows, width, threshold, seed);
        }
        __syncthreads();
        int ks = k0 + 16 * warp;
        if (ks < width) // whole warps
        {
            unsigned b[2][3][2];
            #pragma unroll
            for (int nt = 0; nt < 2; nt++) if (nt < n_tiles)
            {
                float v[4];
                int j = j0 + 8 * nt + g;
                #pragma unroll
                for (int i = 0; i < 4; i++)
                {
                    int k = ks + 2 * t + (i & 1) + (i >= 2 ? 8 : 0);
                    v[i] = k < width && j < rank ? w[(long long)j * w_rank_stride + (long long)k * w_width_stride] : 0.0f;
                }
                lora_split_fragment<4>(v, b[nt]);
            }
            #pragma unroll
            for (int mt = 0; mt < 2; mt++) if (mt < m_tiles)
            {
                unsigned a[4];
                ldmatrix_x4(a, staged + (16 * mt + (lane & 15)) * stride + 16 * warp + 8 * (lane >> 4));
                #pragma unroll
                for (int nt = 0; nt < 2; nt++) if (nt < n_tiles)
                    #pragma unroll
                    for (int p = 2; p >= 0; p--) mma_m16n8k16_bf16(acc[mt][nt], a, b[nt][p]);
            }
        }
        __syncthreads(); // every warp's reads of the staged rows are done
    }
    #pragma unroll
    for (int mt = 0; mt < 2; mt++)
        #pragma unroll
        for (int nt = 0; nt < 2; nt++)
            #pragma unroll
            for (int i = 0; i < 4; i++)
                partial[warp][16 * mt + g + (i >= 2 ? 8 : 0)][8 * nt + 2 * t + (i & 1)] = acc[mt][nt][i];
    __syncthreads();
    for (int o = (int)threadIdx.x; o < LORA_MMA_DOWN_ROWS * LORA_MMA_RANKS; o += (int)blockDim.x)
    {
        int r = o / LORA_MMA_RANKS, jj = o % LORA_MMA_RANKS, n = row0 + r, j = j0 + jj;
        if (n >= rows || j >= rank) continue;
        float total = partial[0][r][jj];
        for (int v = 1; v < LORA_MMA_WARPS; v++) total += partial[v][r][jj];
        out[(long long)n * out_stride + j] = __fmul_rn(__fmul_rn(total, keep_scale), out_scale);
    }
}

// acc[mt][nt] += sum_j r[n * r_stride + j] w[j * w_rank_stride + k * w_width_stride] over all `rank` ranks, for the warp's
// rows [row0, row0 + 32) and columns [col0, col0 + 8 NT) (tile mt's rows 16 mt.., tile nt's columns 8 nt.., fragment
// C's layout). Both operands fp32, split into hi, mid, lo: the header's six mmas per 16 x 8 x 16 step, ranks padded to
// 16 with zeros. No shared memory and no barrier: every lane loads its own fragments (L1/L2).
template <int NT>
PHI2_DEVICE void lora_mma_expand(const float* r, long long r_stride, const float* w, long long w_rank_stride, long long w_width_stride,
                                 int rows, int width, int rank, int row0, int col0, float acc[2][NT][4])
{
    int lane = (int)(threadIdx.x & 31u), g = lane >> 2, t = lane & 3;
    int m_tiles = rows - row0 > 16 ? 2 : 1;
    int n_tiles = (width - col0 + 7) / 8 < NT ? (width - col0 + 7) / 8 : NT; // the same for the whole warp
    for (int j0 = 0; j0 < rank; j0 += 16)
    {
        unsigned a[2][3][4];
        #pragma unroll
        for (int mt = 0; mt < 2; mt++) if (mt < m_tiles)
        {
            float v[8];
            #pragma unroll
            for (int i = 0; i < 8; i++)
            {
                int n = row0 + 16 * mt + g + ((i & 2) ? 8 : 0), j = j0 + 2 * t + (i & 1) + (i >= 4 ? 8 : 0);
                v[i] = n < rows && j < rank ? r[(long long)n * r_stride + j] : 0.0f;
            }
            lora_split_fragment<8>(v, a[mt]);
        }
        #pragma unroll
        for (int nt = 0; nt < NT; nt++) if (nt < n_tiles)
        {
            float v[4];
            int k = col0 + 8 * nt + g;
            #pragma unroll
            for (int i = 0; i < 4; i++)
            {
                int j = j0 + 2 * t + (i & 1) + (i >= 2 ? 8 : 0);
                v[i] = j < rank && k < width ? w[(long long)j * w_rank_stride + (long long)k * w_width_stride] : 0.0f;
            }
            unsigned b[3][2];
            lora_split_fragment<4>(v, b);
            #pragma unroll
            for (int mt = 0; mt < 2; mt++) if (mt < m_tiles)
            {
                // The smallest terms first: (mid, mid), (lo, hi), (hi, lo), (mid, hi), (hi, mid), (hi, hi).
                mma_m16n8k16_bf16(acc[mt][nt], a[mt][1], b[1]);
                mma_m16n8k16_bf16(acc[mt][nt], a[mt][2], b[0]);
                mma_m16n8k16_bf16(acc[mt][nt], a[mt][0], b[2]);
                mma_m16n8k16_bf16(acc[mt][nt], a[mt][1], b[0]);
                mma_m16n8k16_bf16(acc[mt][nt], a[mt][0], b[1]);
                mma_m16n8k16_bf16(acc[mt][nt], a[mt][0], b[0]);
            }
        }
    }
}
