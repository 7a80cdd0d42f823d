// lora_qkv_mma.cuh - lora_qkv.cu's bf16 kernels on tensor cores (its header has their contracts and launches), built from
// lora_mma.cuh's blocks (the split-precision products and their error bounds are there); and lora_qkv_pick, which both
// files' kernels use to take module m's arguments.
#pragma once

#include "common.cuh"
#include "lora_mma.cuh"

// Module m's value of three per-module arguments.
template <typename T>
PHI2_DEVICE T lora_qkv_pick(int m, T q, T k, T v)
{
    return m == 0 ? q : (m == 1 ? k : v);
}

// lora_qkv_down over bf16 x on tensor cores: 32 rows a block (grid ((N + 31) / 32, (max r_m + 15) / 16)), ranks
// [16 blockIdx.y, +16) of every module that has them. The block stages 32 rows x 128 columns of x a step, unmasked
// (x read from DRAM once for all three modules); each warp takes 16 of the columns by ldmatrix and, per module, masks a
// copy of its A fragments with that module's mask (element by element, dropout.cu's bits) and adds the module's 3
// mmas a 16 x 8 tile (lora_mma.cuh's split of A_m). The warps' partial sums go through shared memory one module at a
// time, added in warp order; keep_scale_m multiplies the masked sum.
PHI2_DEVICE void lora_qkv_mma_down(const bf16_t* x, const float* a_q, const float* a_k, const float* a_v, float* u, int rank_q,
                                   int rank_k, int rank_v, unsigned threshold_q, unsigned threshold_k, unsigned threshold_v,
                                   float keep_q, float keep_k, float keep_v, unsigned long long seed_q, unsigned long long seed_k,
                                   unsigned long long seed_v, int rows, int channels)
{
    const int stride = LORA_MMA_DOWN_COLUMNS + LORA_MMA_PAD;
    __shared__ vec16 staged_words[LORA_MMA_DOWN_ROWS * stride / 8];
    __shared__ float partial[LORA_MMA_WARPS][LORA_MMA_DOWN_ROWS][LORA_MMA_RANKS];
    bf16_t* staged = reinterpret_cast<bf16_t*>(staged_words);
    int warp = (int)(threadIdx.x >> 5), lane = (int)(threadIdx.x & 31u), g = lane >> 2, t = lane & 3;
    int row0 = (int)blockIdx.x * LORA_MMA_DOWN_ROWS, j0 = (int)blockIdx.y * LORA_MMA_RANKS;
    int total = rank_q + rank_k + rank_v;
    int m_tiles = rows - row0 > 16 ? 2 : 1; // the same for the whole block
    float acc[3][2][2][4];
    #pragma unroll
    for (int m = 0; m < 3; m++)
        #pragma unroll
        for (int mt = 0; mt < 2; mt++)
            #pragma unroll
            for (int nt = 0; nt < 2; nt++)
                #pragma unroll
                for (int i = 0; i < 4; i++) acc[m][mt][nt][i] = 0.0f;
    for (int k0 = 0; k0 < channels; k0 += LORA_MMA_DOWN_COLUMNS)
    {
        for (int e = (int)threadIdx.x; e < LORA_MMA_DOWN_ROWS * LORA_MMA_DOWN_COLUMNS / 8; e += (int)blockDim.x)
        {
            int r = e / (LORA_MMA_DOWN_COLUMNS / 8), part = e % (LORA_MMA_DOWN_COLUMNS / 8);
            *reinterpret_cast<vec16*>(staged + r * stride + 8 * part) =
                lora_mma_load8(x, channels, channels, row0 + r, k0 + 8 * part, rows, channels, 0u, 0ull);
        }
        __syncthreads();
        int ks = k0 + 16 * warp;
        if (ks < channels) // whole warps
        {
            unsigned a[2][4];
            #pragma unroll
            for (int mt = 0; mt < 2; mt++) if (mt < m_tiles)
                ldmatrix_x4(a[mt], staged + (16 * mt + (lane & 15)) * stride + 16 * warp + 8 * (lane >> 4));
            #pragma unroll
            for (int m = 0; m < 3; m++)
            {
                int rank = lora_qkv_pick(m, rank_q, rank_k, rank_v);
                if (j0 >= rank) continue; // absent, or no ranks in this chunk: the same for the whole block
                const float* w = lora_qkv_pick(m, a_q, a_k, a_v);
                unsigned threshold = lora_qkv_pick(m, threshold_q, threshold_k, threshold_v);
                unsigned long long seed = lora_qkv_pick(m, seed_q, seed_k, seed_v);
                int n_tiles = rank - j0 > 8 ? 2 : 1;
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
                        v[i] = k < channels && j < rank ? w[(long long)j * channels + k] : 0.0f;
                    }
                    lora_split_fragment<4>(v, b[nt]);
                }
                #pragma unroll
                for (int mt = 0; mt < 2; mt++) if (mt < m_tiles)
                {
                    unsigned masked[4];
                    #pragma unroll
                    for (int q = 0; q < 4; q++)
                    {
                        masked[q] = a[mt][q];
                        if (threshold == 0u) continue;
                        long long n = row0 + 16 * mt + g + 8 * (q & 1);
                        int k = ks + 2 * t + 8 * (q >> 1);
                        // Past the last row or column the element is a staged zero already: its bits do not matter.
                        if (dropout_bits24(seed, n * channels + k) < threshold) masked[q] &= 0xffff0000u;
                        if (dropout_bits24(seed, n * channels + k + 1) < threshold) masked[q] &= 0x0000ffffu;
                    }
                    #pragma unroll
                    for (int nt = 0; nt < 2; nt++) if (nt < n_tiles)
                        #pragma unroll
                        for (int p = 2; p >= 0; p--) mma_m16n8k16_bf16(acc[m][mt][nt], masked, b[nt][p]);
                }
            }
        }
        __syncthreads(); // every warp's reads of the staged rows are done
    }
    int offset = 0;
    #pragma unroll
    for (int m = 0; m < 3; m++)
    {
        int rank = lora_qkv_pick(m, rank_q, rank_k, rank_v);
        if (j0 < rank) // the same for the whole block
        {
            #pragma unroll
            for (int mt = 0; mt < 2; mt++)
                #pragma unroll
                for (int nt = 0; nt < 2; nt++)
                    #pragma unroll
                    for (int i = 0; i < 4; i++)
                        partial[warp][16 * mt + g + (i >= 2 ? 8 : 0)][8 * nt + 2 * t + (i & 1)] = acc[m][mt][nt][i];
            __syncthreads();
            float keep_scale = lora_qkv_pick(m, keep_q, keep_k, keep_v);
            for (int o = (int)threadIdx.x; o < LORA_MMA_DOWN_ROWS * LORA_MMA_RANKS; o += (int)blockDim.x)
            {
                int r = o / LORA_MMA_RANKS, jj = o % LORA_MMA_RANKS, n = row0 + r, j = j0 + jj;
                if (n >= rows || j >= rank) continue;
                float sum = partial[0][r][jj];
                for (int v = 1; v < LORA_MMA_WARPS; v++) sum += partial[v][r][jj];
                u[(long long)n * total + offset + j] = __fmul_rn(sum, keep_scale);
            }
            __syncthreads(); // the partials are read before the next module's are written
        }
        offset += rank;
    }
}

// lora_qkv_up_backward over bf16 dy on tensor cores: module m = blockIdx.z's du by lora_mma_row_times_weight over dY's
// column block m (stride 3 C), grid ((N + 31) / 32, (max r_m + 15) / 16, 3).
PHI2_DEVICE void lora_qkv_mma_up_backward(const bf16_t* dy, const float* b_q, const float* b_k, const float* b_v, float* du, int rank_q,
                                          int rank_k, int rank_v, float scaling_q, float scaling_k, float scaling_v, int rows,
                                          int channels)
{
    int m = (int)blockIdx.z;
    int rank = lora_qkv_pick(m, rank_q, rank_k, rank_v);
    int total = rank_q + rank_k + rank_v, offset = (m > 0 ? rank_q : 0) + (m > 1 ? rank_k : 0);
    int j0 = (int)blockIdx.y * LORA_MMA_RANKS;
    if (j0 >= rank) return; // the whole block (absent, or past its rank), before its barriers
    lora_mma_row_times_weight(dy + (long long)m * channels, 3LL * channels, 3LL * channels, lora_qkv_pick(m, b_q, b_k, b_v), 1, rank,
                              du + offset, total, 0u, 1.0f, 0ull, lora_qkv_pick(m, scaling_q, scaling_k, scaling_v), rows, channels,
                              rank, (int)blockIdx.x * LORA_MMA_DOWN_ROWS, j0);
}

// lora_qkv_down_backward over bf16 dx on tensor cores: warp w of block (bx, by) owns rows [32 bx, +32) and columns
// [128 by + 16 w, +16) of dx (grid ((N + 31) / 32, (C + 127) / 128)); per present module lora_mma_expand's six-term
// du_m A_m, masked with module m's mask, times keep_scale_m, added to the total in q, k, v order; rounded once on store.
PHI2_DEVICE void lora_qkv_mma_down_backward(const float* du, const float* a_q, const float* a_k, const float* a_v, bf16_t* dx,
                                            int rank_q, int rank_k, int rank_v, unsigned threshold_q, unsigned threshold_k,
                                            unsigned threshold_v, float keep_q, float keep_k, float keep_v, unsigned long long seed_q,
                                            unsigned long long seed_k, unsigned long long seed_v, int accumulate, int rows, int channels)
{
    int warp = (int)(threadIdx.x >> 5), lane = (int)(threadIdx.x & 31u), g = lane >> 2, t = lane & 3;
    int row0 = (int)blockIdx.x * LORA_MMA_EXPAND_ROWS;
    int col0 = (int)blockIdx.y * LORA_MMA_WARPS * 16 + warp * 16;
    if (col0 >= channels) return; // the whole warp; no barrier in this kernel
    int total = rank_q + rank_k + rank_v, offset = 0;
    float totals[2][2][4];
    #pragma unroll
    for (int mt = 0; mt < 2; mt++)
        #pragma unroll
        for (int nt = 0; nt < 2; nt++)
            #pragma unroll
            for (int i = 0; i < 4; i++) totals[mt][nt][i] = 0.0f;
    #pragma unroll
    for (int m = 0; m < 3; m++)
    {
        int rank = lora_qkv_pick(m, rank_q, rank_k, rank_v);
        if (rank > 0)
        {
            float acc[2][2][4];
            #pragma unroll
            for (int mt = 0; mt < 2; mt++)
                #pragma unroll
                for (int nt = 0; nt < 2; nt++)
                    #pragma unroll
                    for (int i = 0; i < 4; i++) acc[mt][nt][i] = 0.0f;
            lora_mma_expand<2>(du + offset, total, lora_qkv_pick(m, a_q, a_k, a_v), channels, 1, rows, channels, rank, row0, col0, acc);
            unsigned threshold = lora_qkv_pick(m, threshold_q, threshold_k, threshold_v);
            float keep_scale = lora_qkv_pick(m, keep_q, keep_k, keep_v);
            unsigned long long seed = lora_qkv_pick(m, seed_q, seed_k, seed_v);
            #pragma unroll
            for (int mt = 0; mt < 2; mt++)
                #pragma unroll
                for (int nt = 0; nt < 2; nt++)
                    #pragma unroll
                    for (int i = 0; i < 4; i++)
                    {
                        long long index = (long long)(row0 + 16 * mt + g + (i >= 2 ? 8 : 0)) * channels + col0 + 8 * nt + 2 * t + (i & 1);
                        float v = dropout_bits24(seed, index) >= threshold ? __fmul_rn(acc[mt][nt][i], keep_scale) : 0.0f;
                        totals[mt][nt][i] = __fadd_rn(totals[mt][nt][i], v);
                    }
        }
        offset += rank;
    }
    #pragma unroll
    for (int mt = 0; mt < 2; mt++)
        #pragma unroll
        for (int nt = 0; nt < 2; nt++)
            #pragma unroll
            for (int i = 0; i < 4; i++)
            {
                int n = row0 + 16 * mt + g + (i >= 2 ? 8 : 0), k = col0 + 8 * nt + 2 * t + (i & 1);
                if (n >= rows || k >= channels) continue;
                long long index = (long long)n * channels + k;
                store<dtype_bf16>(dx, index, accumulate ? __fadd_rn(load<dtype_bf16>(dx, index), totals[mt][nt][i]) : totals[mt][nt][i]);
            }
}

// lora_qkv_weight_grad over bf16 left on tensor cores: module m = blockIdx.z's gradient by lora_mma_weight_grad (32
// columns a block, grid ((C + 31) / 32, (max r_m + 15) / 16, 3)), left dy's column block m (stride 3 C) or x (stride C).
PHI2_DEVICE void lora_qkv_mma_weight_grad(const bf16_t* left, const float* right, float* grad_q, float* grad_k, float* grad_v,
                                          int rank_q, int rank_k, int rank_v, unsigned threshold_q, unsigned threshold_k,
                                          unsigned threshold_v, float keep_q, float keep_k, float keep_v, unsigned long long seed_q,
                                          unsigned long long seed_k, unsigned long long seed_v, float scaling_q, float scaling_k,
                                          float scaling_v, int of_a, int accumulate, int rows, int channels)
{
    int m = (int)blockIdx.z;
    float* grad = lora_qkv_pick(m, grad_q, grad_k, grad_v);
    int rank = lora_qkv_pick(m, rank_q, rank_k, rank_v);
    int total = rank_q + rank_k + rank_v, offset = (m > 0 ? rank_q : 0) + (m > 1 ? rank_k : 0);
    int j0 = (int)blockIdx.y * LORA_MMA_RANKS;
    if (grad == nullptr || j0 >= rank) return; // the whole block, before its barriers
    long long left_stride = of_a ? channels : 3LL * channels;
    lora_mma_weight_grad(of_a ? left : left + (long long)m * channels, left_stride, channels, right + offset, total, grad,
                         of_a ? 1 : rank, of_a ? channels : 1, lora_qkv_pick(m, threshold_q, threshold_k, threshold_v),
                         lora_qkv_pick(m, keep_q, keep_k, keep_v), lora_qkv_pick(m, seed_q, seed_k, seed_v),
                         lora_qkv_pick(m, scaling_q, scaling_k, scaling_v), (accumulate >> m) & 1, rows, channels, rank, j0);
}
