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
