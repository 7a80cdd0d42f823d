// test_kernels.cu - kernels with planted bugs, compiled only into the emulator, so EmulatorTests can
// show that each bug fails instead of passing. Never embedded for NVRTC.
//
// Kernels (grid (1), block (n <= 256), no dynamic shared memory):
//   emu_test_rotate_synced(x, y)    y[t] = x[(t + 1) % n] through shared memory, with the barrier
//   emu_test_rotate_unsynced(x, y)  the same without __syncthreads: reads a neighbour's unwritten slot
//   emu_test_early_return(x, y)     thread 0 returns before a barrier the others reach: a deadlock
//   emu_test_warp_sum(x, y)         y[t] = sum of x over t's warp (warp_sum from common.cuh)
//   emu_test_trap()                 calls __trap()
//   emu_test_shfl_outside_mask(x, y) lanes 0..15 (mask 0xffff) read lanes 16..31: outside the mask
//   emu_test_block_sum(x, y, n)     y[0] = sum of x[0..n); dynamic shared memory: one float per warp
//   emu_test_convert(x, bf, h, bf_back, h_back, n)  bf16/fp16 round trips through common.cuh (grid any)
//   emu_test_write_past_end(y, n)   y[i] = i for i <= n: one element past the end (an off-by-one bound)
//   emu_test_read_shifted(x, y, n, shift)  y[i] = x[i + shift] for i < n (grid any): shift 1 reads one element
//                                   past the end of x, -1 one before its start (an off-by-one index)
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

PHI2_KERNEL void emu_test_shfl_outside_mask(const float* x, float* y)
{
    unsigned t = threadIdx.x;
    if (t < 16) y[t] = __shfl_sync(0x0000ffffu, x[t], (int)t + 16);
}

PHI2_KERNEL void emu_test_block_sum(const float* x, float* y, int n)
{
    PHI2_DYNAMIC_SHARED(float, partial);
    unsigned t = threadIdx.x, warp = t / 32, lane = t % 32, warps = blockDim.x / 32;
    float v = 0.0f;
    for (int i = (int)t; i < n; i += (int)blockDim.x) v += x[i];
    v = warp_sum(v);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0)
    {
        v = lane < warps ? partial[lane] : 0.0f;
        v = warp_sum(v);
        if (lane == 0) y[0] = v;
    }
}

PHI2_KERNEL void emu_test_convert(const float* x, bf16_t* bf, f16_t* h, float* bf_back, float* h_back, int n)
{
    int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (i >= n) return;
    bf[i] = f32_to_bf16(x[i]);
    h[i] = f32_to_f16(x[i]);
    bf_back[i] = bf16_to_f32(bf[i]);
    h_back[i] = f16_to_f32(h[i]);
}

// The classic off-by-one: `<=` where `<` was meant. On the GPU this silently corrupts the neighbouring
// buffer; the emulated device's guard bands must catch it.
PHI2_KERNEL void emu_test_write_past_end(float* y, int n)
{
    int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (i <= n) y[i] = (float)i;
}

// The same off-by-one on the load side: `x[i + 1]` over i < n reads one element past the end. On the GPU that
// reads the neighbouring buffer's first element; the emulated device's guard pages must catch it.
PHI2_KERNEL void emu_test_read_shifted(const float* x, float* y, int n, int shift)
{
    int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (i < n) y[i] = x[i + shift];
}

// Dynamic shared memory indexed one element past its launched size (blockDim.x floats): each thread writes
// s[threadIdx.x], then reads its right neighbour's slot, s[threadIdx.x + 1]; the last thread reads s[blockDim.x].
// With `wrap` set the index wraps around (the correct kernel, which uses exactly the launched size).
PHI2_KERNEL void emu_test_dynamic_shared_neighbour(float* y, int wrap)
{
    PHI2_DYNAMIC_SHARED(float, s);
    unsigned t = threadIdx.x, next = t + 1;
    if (wrap && next == blockDim.x) next = 0;
    s[t] = (float)(blockIdx.x * blockDim.x + t);
    __syncthreads();
    y[blockIdx.x * blockDim.x + t] = s[next];
}

// A local array larger than the emulator's 256 KiB fiber stack, touched from its end downwards: the stack
// overflows into its guard page. (On the GPU the local memory would be sized for it, or the launch refused.)
PHI2_KERNEL void emu_test_stack_overflow(float* y, int n)
{
    volatile char big[300 * 1024];
    for (int i = (int)sizeof(big) - 1; i >= 0; i -= 64) big[i] = (char)i;
    y[blockIdx.x * blockDim.x + threadIdx.x] = (float)big[n];
}
