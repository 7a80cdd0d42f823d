// test_kernels.cu - kernels with planted bugs, compiled only into the emulator, so EmulatorTests can
// show that each bug fails instead of passing. Never embedded for NVRTC.
//
// Kernels (grid (1), block (n <= 256), no dynamic shared memory):
//   emu_test_rotate_synced(x, y)    y[t] = x[(t + 1) % n] through shared memory, with the barrier
//   emu_test_rotate_unsynced(x, y)  the same without __syncthreads: reads a neighbour's unwritten slot
//   emu_test_early_return(x, y)     thread 0 returns before a barrier the others reach: a deadlock
//   emu_test_warp_sum(x, y)         y[t] = sum of x over t's warp (warp_sum from common.cuh)
//   emu_test_trap()                 calls __trap()
#include "../common.cuh"

template <bool Sync>
PHI2_DEVICE void rotate(const float* x, float* y)
{
    __shared__ float s[256];
    unsigned t = threadIdx.x;
    s[t] = x[t];
    if (Sync) __syncthreads();
    y[t] = s[(t + 1) % blockDim.x];
}

PHI2_KERNEL void emu_test_rotate_synced(const float* x, float* y) { rotate<true>(x, y); }
PHI2_KERNEL void emu_test_rotate_unsynced(const float* x, float* y) { rotate<false>(x, y); }

PHI2_KERNEL void emu_test_early_return(const float* x, float* y)
{
    __shared__ float s[256];
    unsigned t = threadIdx.x;
    if (t == 0) return;
    s[t] = x[t];
    __syncthreads();
    y[t] = s[t];
}

PHI2_KERNEL void emu_test_warp_sum(const float* x, float* y)
{
    unsigned t = threadIdx.x;
    y[t] = warp_sum(x[t]);
}

PHI2_KERNEL void emu_test_trap() { __trap(); }
