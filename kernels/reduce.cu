// reduce.cu - row reductions over the last dimension of a row-major [rows, cols] matrix, fp32 result.
//
// Kernels (dtype of x: f32, bf16, f16; y is fp32 [rows]):
//   row_sum_{dtype}(x, y, rows, cols)  y[r] = sum over c of x[r, c], accumulated in fp32
//   row_max_{dtype}(x, y, rows, cols)  y[r] = max over c of x[r, c]; NaN when the row holds a NaN
//   grid (rows; fewer works, each block then walks rows blockIdx.x, + gridDim.x, ...),
//   block (a multiple of 32, at most 1024: the launcher takes cols rounded up to 32, at most 256), no dynamic
//   shared memory. Any cols >= 1, including odd and fewer than 32 (idle threads contribute the identity).
// Building blocks of softmax, cross-entropy and norms rather than autograd ops: no backward, nothing saved.
//
// Each thread folds its strided columns c = t, t + blockDim.x, ... (consecutive threads read consecutive
// addresses), then block_reduce (common.cuh) combines the threads: xor shuffles within each warp, one
// partial per warp through shared memory, a final warp.
//
// Sum of squares over a whole buffer (gradient norms for clipping), deterministic in two stages:
//   sum_of_squares_{dtype}(x, partial, n)  partial[b] = sum of x[i]^2 over block b's elements i = b * blockDim.x + t,
//       + gridDim.x * blockDim.x, ... (fp32, combined in a fixed order by block_sum)
//       grid (G: the launcher takes min((n + 255) / 256, 1024), a function of n alone), block (256), no dynamic
//       shared memory; partial is fp32 [gridDim.x].
//   The launcher finishes with row_sum_f32 over partial as one row [1, G] (skipped when G == 1: the partial is the
//   total). Fixed grids and reduction trees make the result the same on every run; no atomics.
#include "common.cuh"

template <typename D, typename Op>
PHI2_DEVICE void row_reduce(const typename D::type* x, float* y, int rows, int cols)
{
    __shared__ float scratch[32];
    for (int r = (int)blockIdx.x; r < rows; r += (int)gridDim.x)
    {
        const typename D::type* row = x + (long long)r * cols;
        float v = Op::identity();
        for (int c = (int)threadIdx.x; c < cols; c += (int)blockDim.x) v = Op::combine(v, load<D>(row, c));
        v = block_reduce<Op>(v, scratch);
        if (threadIdx.x == 0) y[r] = v;
    }
}

PHI2_KERNEL void row_sum_f32(const float* x, float* y, int rows, int cols) { row_reduce<dtype_f32, reduce_sum>(x, y, rows, cols); }
PHI2_KERNEL void row_sum_bf16(const bf16_t* x, float* y, int rows, int cols) { row_reduce<dtype_bf16, reduce_sum>(x, y, rows, cols); }
PHI2_KERNEL void row_sum_f16(const f16_t* x, float* y, int rows, int cols) { row_reduce<dtype_f16, reduce_sum>(x, y, rows, cols); }

PHI2_KERNEL void row_max_f32(const float* x, float* y, int rows, int cols) { row_reduce<dtype_f32, reduce_max>(x, y, rows, cols); }
PHI2_KERNEL void row_max_bf16(const bf16_t* x, float* y, int rows, int cols) { row_reduce<dtype_bf16, reduce_max>(x, y, rows, cols); }
PHI2_KERNEL void row_max_f16(const f16_t* x, float* y, int rows, int cols) { row_reduce<dtype_f16, reduce_max>(x, y, rows, cols); }

template <typename D>
PHI2_DEVICE void sum_of_squares(const typename D::type* x, float* partial, int n)
{
    __shared__ float scratch[32];
    float v = 0.0f;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    {
        float e = load<D>(x, i);
        v += e * e;
    }
    v = block_sum(v, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = v;
}

PHI2_KERNEL void sum_of_squares_f32(const float* x, float* partial, int n) { sum_of_squares<dtype_f32>(x, partial, n); }
PHI2_KERNEL void sum_of_squares_bf16(const bf16_t* x, float* partial, int n) { sum_of_squares<dtype_bf16>(x, partial, n); }
PHI2_KERNEL void sum_of_squares_f16(const f16_t* x, float* partial, int n) { sum_of_squares<dtype_f16>(x, partial, n); }
