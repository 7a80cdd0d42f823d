// test_reduce.cu - planted bugs in the row reduction (kernels/reduce.cu with common.cuh's block_reduce),
// compiled only into the emulator so ReductionBugTests can show that each one fails. Never embedded for NVRTC.
//
// Each kernel is row_sum_f32 with block_sum copied in and one line changed (marked PLANTED); same launch shape
// as row_sum_f32 (grid (rows), block (a multiple of 32), no dynamic shared memory):
//   emu_test_row_sum_unsynced(x, y, rows, cols)    no __syncthreads between writing the per-warp partials and
//       reading them: warp 0 reads slots other warps have not written yet (poisoned NaN in the emulator, a race
//       that usually hides on a GPU)
//   emu_test_row_sum_wrong_lane(x, y, rows, cols)  the xor shuffle reads lane ^ (offset - 1) instead of
//       lane ^ offset: each warp sums some lanes twice and never combines its two halves
#include "../common.cuh"

PHI2_DEVICE float planted_block_sum_unsynced(float v, float* scratch)
{
    unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    v = warp_reduce<reduce_sum>(v);
    if (lane == 0) scratch[warp] = v;
    // PLANTED: the __syncthreads() that belongs here is missing.
    v = warp_reduce<reduce_sum>(lane < warps ? scratch[lane] : reduce_sum::identity());
    __syncthreads();
    return v;
}

PHI2_DEVICE float planted_warp_sum_wrong_lane(float v)
{
    for (int offset = 16; offset > 0; offset >>= 1)
        v = reduce_sum::combine(v, __shfl_xor_sync(0xffffffffu, v, offset - 1)); // PLANTED: offset - 1
    return v;
}

PHI2_DEVICE float planted_block_sum_wrong_lane(float v, float* scratch)
{
    unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    v = planted_warp_sum_wrong_lane(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = planted_warp_sum_wrong_lane(lane < warps ? scratch[lane] : reduce_sum::identity());
    __syncthreads();
    return v;
}

template <bool Unsynced>
PHI2_DEVICE void planted_row_sum(const float* x, float* y, int rows, int cols)
{
    __shared__ float scratch[32];
    for (int r = (int)blockIdx.x; r < rows; r += (int)gridDim.x)
    {
        const float* row = x + (long long)r * cols;
        float v = reduce_sum::identity();
        for (int c = (int)threadIdx.x; c < cols; c += (int)blockDim.x) v = reduce_sum::combine(v, load<dtype_f32>(row, c));
        v = Unsynced ? planted_block_sum_unsynced(v, scratch) : planted_block_sum_wrong_lane(v, scratch);
        if (threadIdx.x == 0) y[r] = v;
    }
}

PHI2_KERNEL void emu_test_row_sum_unsynced(const float* x, float* y, int rows, int cols) { planted_row_sum<true>(x, y, rows, cols); }
PHI2_KERNEL void emu_test_row_sum_wrong_lane(const float* x, float* y, int rows, int cols) { planted_row_sum<false>(x, y, rows, cols); }
