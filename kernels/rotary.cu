// rotary.cu - Phi-2's partial rotary position embedding, half-split (GPT-NeoX "rotate_half") convention, as the CPU
// backend (src/Phi2Native.Backends/Ops/Rotary/CpuRotary.cs; RotaryOp) and HF PhiAttention apply it to q and k
// [B, T, H, D]: in each head, dims [0, rd) rotate and dims [rd, D) pass through (Phi-2: D = 80, rd = 32, theta = 10000).
//
//   half = rd / 2, p = row_offsets[b] + t (0 + t when row_offsets is null), angle_j = p * (1 / theta^(2j / rd)), j < half
//   y[j]        = x[j] * cos(angle_j) - x[j + half] * sin(angle_j)
//   y[j + half] = x[j + half] * cos(angle_j) + x[j] * sin(angle_j)
//
// Kernels (dtype: f32, bf16; x, y, dY, dX of the dtype, arithmetic in fp32, one rounding on store):
//   rotary_{dtype}(x, y, row_offsets, rows, T, H, D, rd, theta)
//       rows = B * T; row r is token t = r % T of batch b = r / T, holding H * D elements, at position
//       row_offsets[b] + t: row_offsets is I32 [B] in device memory (a KV cache's rows may hold different lengths),
//       or null for every row starting at 0 (training, a prompt into an empty cache). A negative offset (the CPU
//       backend throws; a kernel cannot) makes that batch row's output NaN, x unread.
//       Saves nothing for backward: the rotation is linear and depends only on the positions.
//   rotary_backward_{dtype}(dY, dX, row_offsets, rows, T, H, D, rd, theta)
//       dX = the transposed (inverse) rotation of dY at the same positions: the same formula with sin negated;
//       written (=), an activation gradient.
//   All: grid (rows; fewer works, each block then walks rows blockIdx.x, + gridDim.x, ...), block (any; the launcher
//   takes H * (D - rd / 2) work items rounded up to 32, at most 256), no dynamic shared memory. Per row the block first
//   computes cos and sin of its position's half angles into shared memory (rd / 2 <= 128 entries), then each work item
//   is one rotated pair (j, j + half) or one passed-through dim of one head. y may be x itself (exact overlap), and dX
//   may be dY: each element is read before it is written, by the same thread.
//
// Angles as the CPU backend computes them: inv_freq, the angle, cos and sin in double, each rounded once to fp32, so
// the cos/sin values equal the CPU's (CUDA's double pow, sin and cos are within 2 double ulps of correctly rounded,
// which survives rounding to fp32 except in rare ties). Positions up to 2048 and beyond keep full fp32 accuracy this
// way, where an fp32 angle would lose it. The products then differ from the CPU's only by FMA contraction on the GPU
// (the CPU rounds x*c and x*s separately): a few fp32 ulps of the terms.
#include "rotary.cuh"

template <typename D>
PHI2_DEVICE void rotary(const typename D::type* x, typename D::type* y, int rows, int T, int H, int headDim, int rd, double theta,
                        const int* row_offsets, bool inverse)
{
    __shared__ float cos_s[PHI2_ROTARY_MAX_HALF];
    __shared__ float sin_s[PHI2_ROTARY_MAX_HALF];
    int half = rd / 2;
    int items = headDim - half; // per head: half rotated pairs, then headDim - rd passed-through dims
    long long row_elements = (long long)H * headDim;
    for (int r = (int)blockIdx.x; r < rows; r += (int)gridDim.x)
    {
        __syncthreads(); // the previous row's cos/sin are read by every thread
        long long offset = row_offsets ? row_offsets[r / T] : 0;
        bool bad = offset < 0; // uniform over the block
        long long p = offset + r % T;
        if (!bad) rotary_angles(cos_s, sin_s, p, half, rd, theta, inverse);
        __syncthreads();
        const typename D::type* xr = x + (long long)r * row_elements;
        typename D::type* yr = y + (long long)r * row_elements;
        for (int i = (int)threadIdx.x; i < H * items; i += (int)blockDim.x)
        {
            int h = i / items;
            rotary_item<D>(xr, yr, (long long)h * headDim, i - h * items, half, cos_s, sin_s, bad);
        }
    }
}

PHI2_KERNEL void rotary_f32(const float* x, float* y, const int* row_offsets, int rows, int T, int H, int D, int rd, double theta)
{
    rotary<dtype_f32>(x, y, rows, T, H, D, rd, theta, row_offsets, false);
}

PHI2_KERNEL void rotary_bf16(const bf16_t* x, bf16_t* y, const int* row_offsets, int rows, int T, int H, int D, int rd, double theta)
{
    rotary<dtype_bf16>(x, y, rows, T, H, D, rd, theta, row_offsets, false);
}

PHI2_KERNEL void rotary_backward_f32(const float* dy, float* dx, const int* row_offsets, int rows, int T, int H, int D, int rd,
                                     double theta)
{
    rotary<dtype_f32>(dy, dx, rows, T, H, D, rd, theta, row_offsets, true);
}

PHI2_KERNEL void rotary_backward_bf16(const bf16_t* dy, bf16_t* dx, const int* row_offsets, int rows, int T, int H, int D, int rd,
                                      double theta)
{
    rotary<dtype_bf16>(dy, dx, rows, T, H, D, rd, theta, row_offsets, true);
}
