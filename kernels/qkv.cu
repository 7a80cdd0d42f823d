// qkv.cu - the fused q/k/v projection's split of one GEMM's output into heads, with Phi-2's partial rotary on q and k
// and, at inference, k and v written straight into the KV cache (QkvProjectionOp, src/Phi2Native.Backends/Ops/Qkv/; the
// CPU reference is CpuQkvProjection, which is RotaryOp's rotation and KvCacheOp's move on the column blocks). The GEMM
// before it (cuBLASLt, BIAS epilogue) gives qkv [N, 3C] = x W^T + b with W the layer's [3C, C] q/k/v weight: columns
// [0, C) are q, [C, 2C) k, [2C, 3C) v, and C = H * D with head h at columns [h D, h D + D) of each block.
//
// Rotation: exactly rotary.cu's (half-split, dims [0, rd) of each head rotate, [rd, D) pass through), row r being
// token t = r % T of batch row b = r / T at position p = row_offsets[b] + t (0 + t when row_offsets is null), with the
// angles computed as there: inv_freq, the angle, cos and sin in double, each rounded once to fp32.
//   y[j]        = x[j] * cos(angle_j) - x[j + half] * sin(angle_j)
//   y[j + half] = x[j + half] * cos(angle_j) + x[j] * sin(angle_j)        half = rd / 2, j < half
//
// Kernels (dtype: f32, bf16, f16; arithmetic in fp32, one rounding on store; v is an exact move of the stored bits):
//   qkv_split_rotary_{dtype}(qkv, q, k, v, row_offsets, rows, T, H, D, rd, theta, Tmax)
//       rows = N = B * T. q [B, T, H, D] = rotated q block, always. With Tmax == 0: k and v [B, T, H, D] (k rotated,
//       v copied). With Tmax > 0: k and v are the layer's caches [B, Tmax, H, D] and row r goes to cache row
//       row_offsets[b] + t (row_offsets required): the KV cache's write, cache.cu's, without the [B, T, H, D] temporaries;
//       a batch row whose p0 = row_offsets[b] is outside [0, Tmax - T] writes no cache rows (cache.cu's rule). A
//       negative offset makes that row's q (and, without a cache, k) NaN (the CPU backend throws; a kernel cannot).
//       Saves nothing for backward: the rotation is linear and depends only on the positions.
//   qkv_split_rotary_backward_{dtype}(dq, dk, dv, dqkv, row_offsets, rows, T, H, D, rd, theta)
//       dqkv [N, 3C] (=, an activation gradient): the q and k blocks are dq and dk rotated back (the same formula with
//       sin negated), the v block is dv; a null dq, dk or dv (no gradient reached it) gives zeros in its block. Then
//       one dX GEMM (accumulating into x's gradient) and the weight gradients' GEMMs read dqkv.
//   Both: grid (rows; fewer works, each block then walks rows blockIdx.x, + gridDim.x, ...), block (any; the launcher
//   takes one thread per work item of a row, 2 H (D - rd / 2) + H D of them rounded up to 32, at most 256), no
//   dynamic shared memory; per row the block computes cos and sin of its position's half angles into shared memory
//   (rd / 2 <= 128 entries), then each work item is one rotated pair (j, j + half) or one passed-through dim of one
//   head of q or k, or one element of v. Outputs must not overlap inputs.
//
// Cost per launch, per row of C = H D: forward reads 3 C elements (and B row offsets) and writes 3 C (v and k into the
// cache when cached), 6 flops per rotated pair of q and k (3 H rd flops per row over both, as rotary.cu counts); the
// backward the same with the directions swapped.
#include "rotary.cuh"

template <typename D>
PHI2_DEVICE void qkv_split_rotary(const typename D::type* qkv, typename D::type* q, typename D::type* k, typename D::type* v,
                                  const int* row_offsets, int rows, int T, int H, int headDim, int rd, double theta, int Tmax)
{
    __shared__ float cos_s[PHI2_ROTARY_MAX_HALF];
    __shared__ float sin_s[PHI2_ROTARY_MAX_HALF];
    int half = rd / 2;
    int items = headDim - half; // per head of q or k: half rotated pairs, then headDim - rd passed-through dims
    long long c = (long long)H * headDim;
    int rotated = 2 * H * items; // q's and k's work items of a row; v's C follow
    for (int r = (int)blockIdx.x; r < rows; r += (int)gridDim.x)
    {
        __syncthreads(); // the previous row's cos/sin are read by every thread
        int b = r / T, t = r - b * T;
        long long offset = row_offsets ? row_offsets[b] : 0;
        bool bad = offset < 0; // uniform over the block
        bool cached = Tmax > 0;
        bool write_kv = !cached || (!bad && offset + T <= Tmax);
        if (!bad) rotary_angles(cos_s, sin_s, offset + t, half, rd, theta, false);
        __syncthreads();
        const typename D::type* xr = qkv + (long long)r * 3 * c;
        long long kv_row = cached ? (long long)b * Tmax + offset + t : r; // the cache's row, or this row
        for (int i = (int)threadIdx.x; i < rotated + c; i += (int)blockDim.x)
        {
            if (i < H * items)
            {
                int h = i / items;
                rotary_item<D>(xr, q + (long long)r * c, (long long)h * headDim, i - h * items, half, cos_s, sin_s, bad);
            }
            else if (i < rotated)
            {
                if (!write_kv) continue;
                int ik = i - H * items, h = ik / items;
                // k's block starts c elements into the source row; rotary_item offsets source and destination alike.
                long long base = (long long)h * headDim;
                rotary_item<D>(xr + c, k + kv_row * c, base, ik - h * items, half, cos_s, sin_s, bad);
            }
            else
            {
                if (!write_kv) continue;
                long long d = i - rotated;
                v[kv_row * c + d] = xr[2 * c + d];
            }
        }
    }
}

template <typename D>
PHI2_DEVICE void qkv_split_rotary_backward(const typename D::type* dq, const typename D::type* dk, const typename D::type* dv,
                                           typename D::type* dqkv, const int* row_offsets, int rows, int T, int H, int headDim, int rd,
                                           double theta)
{
    __shared__ float cos_s[PHI2_ROTARY_MAX_HALF];
    __shared__ float sin_s[PHI2_ROTARY_MAX_HALF];
    int half = rd / 2;
    int items = headDim - half;
    long long c = (long long)H * headDim;
    int rotated = 2 * H * items;
    for (int r = (int)blockIdx.x; r < rows; r += (int)gridDim.x)
    {
        __syncthreads();
        int b = r / T, t = r - b * T;
        long long offset = row_offsets ? row_offsets[b] : 0;
        bool bad = offset < 0;
        if (!bad) rotary_angles(cos_s, sin_s, offset + t, half, rd, theta, true);
        __syncthreads();
        typename D::type* yr = dqkv + (long long)r * 3 * c;
        for (int i = (int)threadIdx.x; i < rotated + c; i += (int)blockDim.x)
        {
            if (i < rotated)
            {
                int block = i < H * items ? 0 : 1;
                int ik = i - block * H * items, h = ik / items, kk = ik - h * items;
                const typename D::type* source = block == 0 ? dq : dk;
                typename D::type* y = yr + block * c;
                long long base = (long long)h * headDim;
                if (source) rotary_item<D>(source + (long long)r * c, y, base, kk, half, cos_s, sin_s, bad);
                else if (kk < half)
                {
                    store<D>(y, base + kk, 0.0f);
                    store<D>(y, base + kk + half, 0.0f);
                }
                else store<D>(y, base + kk + half, 0.0f);
            }
            else
            {
                long long d = i - rotated;
                if (dv) yr[2 * c + d] = dv[(long long)r * c + d];
                else store<D>(yr, 2 * c + d, 0.0f);
            }
        }
    }
}

PHI2_KERNEL void qkv_split_rotary_f32(const float* qkv, float* q, float* k, float* v, const int* row_offsets, int rows, int T, int H, int D,
                                      int rd, double theta, int Tmax)
{
    qkv_split_rotary<dtype_f32>(qkv, q, k, v, row_offsets, rows, T, H, D, rd, theta, Tmax);
}

PHI2_KERNEL void qkv_split_rotary_bf16(const bf16_t* qkv, bf16_t* q, bf16_t* k, bf16_t* v, const int* row_offsets, int rows, int T, int H,
                                       int D, int rd, double theta, int Tmax)
{
    qkv_split_rotary<dtype_bf16>(qkv, q, k, v, row_offsets, rows, T, H, D, rd, theta, Tmax);
}

PHI2_KERNEL void qkv_split_rotary_f16(const f16_t* qkv, f16_t* q, f16_t* k, f16_t* v, const int* row_offsets, int rows, int T, int H, int D,
                                      int rd, double theta, int Tmax)
{
    qkv_split_rotary<dtype_f16>(qkv, q, k, v, row_offsets, rows, T, H, D, rd, theta, Tmax);
}

PHI2_KERNEL void qkv_split_rotary_backward_f32(const float* dq, const float* dk, const float* dv, float* dqkv, const int* row_offsets, int rows,
                                               int T, int H, int D, int rd, double theta)
{
    qkv_split_rotary_backward<dtype_f32>(dq, dk, dv, dqkv, row_offsets, rows, T, H, D, rd, theta);
}

PHI2_KERNEL void qkv_split_rotary_backward_bf16(const bf16_t* dq, const bf16_t* dk, const bf16_t* dv, bf16_t* dqkv, const int* row_offsets,
                                                int rows, int T, int H, int D, int rd, double theta)
{
    qkv_split_rotary_backward<dtype_bf16>(dq, dk, dv, dqkv, row_offsets, rows, T, H, D, rd, theta);
}

PHI2_KERNEL void qkv_split_rotary_backward_f16(const f16_t* dq, const f16_t* dk, const f16_t* dv, f16_t* dqkv, const int* row_offsets,
                                               int rows, int T, int H, int D, int rd, double theta)
{
    qkv_split_rotary_backward<dtype_f16>(dq, dk, dv, dqkv, row_offsets, rows, T, H, D, rd, theta);
}
