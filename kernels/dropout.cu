// dropout.cu - dropout with the counter-based mask every backend shares (src/Phi2Native.Core/Determinism/DropoutMask.cs),
// bit for bit: whether element i is kept depends only on (seed, i), so forward saves nothing and backward
// recomputes the mask from the seed.
//   z = seed + (i + 1) * 0x9E3779B97F4A7C15 (mod 2^64), then the SplitMix64 finalizer
//   z = (z ^ z >> 30) * 0xBF58476D1CE4E5B9; z = (z ^ z >> 27) * 0x94D049BB133111EB; z ^= z >> 31
//   keep iff (z >> 40) >= threshold, threshold = ceil(p * 2^24) (DropoutMask.KeepThreshold, computed on the host:
//   the exact form of u >= p for u = (z >> 40) * 2^-24, with no fp32 rounding of p on the way)
// Kept elements are multiplied by scale = 1 / (1 - p), computed in double and rounded to fp32 by the host as the CPU
// rounds it; dropped ones are +0 (whatever they held, NaN and Inf included). p = 0 is a copy, which the launcher
// does without a kernel, as the CPU does; p close to 1 may keep nothing (threshold 2^24 drops every element).
//
// Kernels (dtype: f32, bf16, f16):
//   dropout_{dtype}(x, y, threshold, scale, seed, n)             y[i] = keep(i) ? x[i] * scale : 0
//       Saves nothing: backward needs only the seed (and p).
//   dropout_backward_{dtype}(dy, dx, threshold, scale, seed, n)  dx[i] = keep(i) ? dy[i] * scale : 0  written (=)
//   Both: grid ((n + 255) / 256), block (256), no dynamic shared memory (any grid that covers n works).
//   y may alias x and dx may alias dy (each element is read before it is written, by the same thread).
#include "common.cuh"

template <typename D>
PHI2_DEVICE void dropout_apply(const typename D::type* x, typename D::type* y, unsigned threshold, float scale,
                               unsigned long long seed, int n)
{
    int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (i < n) store<D>(y, i, dropout_bits24(seed, i) >= threshold ? load<D>(x, i) * scale : 0.0f);
}

PHI2_KERNEL void dropout_f32(const float* x, float* y, unsigned threshold, float scale, unsigned long long seed, int n)
{
    dropout_apply<dtype_f32>(x, y, threshold, scale, seed, n);
}

PHI2_KERNEL void dropout_bf16(const bf16_t* x, bf16_t* y, unsigned threshold, float scale, unsigned long long seed, int n)
{
    dropout_apply<dtype_bf16>(x, y, threshold, scale, seed, n);
}

PHI2_KERNEL void dropout_f16(const f16_t* x, f16_t* y, unsigned threshold, float scale, unsigned long long seed, int n)
{
    dropout_apply<dtype_f16>(x, y, threshold, scale, seed, n);
}

PHI2_KERNEL void dropout_backward_f32(const float* dy, float* dx, unsigned threshold, float scale, unsigned long long seed, int n)
{
    dropout_apply<dtype_f32>(dy, dx, threshold, scale, seed, n);
}

PHI2_KERNEL void dropout_backward_bf16(const bf16_t* dy, bf16_t* dx, unsigned threshold, float scale, unsigned long long seed, int n)
{
    dropout_apply<dtype_bf16>(dy, dx, threshold, scale, seed, n);
}

PHI2_KERNEL void dropout_backward_f16(const f16_t* dy, f16_t* dx, unsigned threshold, float scale, unsigned long long seed, int n)
{
    dropout_apply<dtype_f16>(dy, dx, threshold, scale, seed, n);
}
