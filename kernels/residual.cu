// residual.cu - the parallel block's sum, y = (drop(attention) + drop(mlp)) + hidden (HF's order), in one pass:
// today's three launches (two dropouts and two adds, with two temporaries) become one, reading a, m and h once.
// The dropout masks are dropout.cu's (common.cuh's dropout_bits24, keep iff bits >= threshold, a seed per branch), so the
// result is bit for bit the unfused ops' in fp32 (every product and sum one fp32 operation, rounded to nearest:
// the _rn intrinsics keep NVRTC from contracting a*s + m*s into an FMA). In bf16 and f16 the two intermediate
// roundings to the storage type that the unfused ops make are skipped: one rounding, on store.
//
// Kernels (dtype: f32, bf16, f16; n elements of each buffer, [B, T, C] flattened):
//   parallel_residual_{dtype}(a, m, h, y, threshold, scale, seed_a, seed_m, n)
//       y[i] = (keep(seed_a, i) ? a[i] * scale : 0) + (keep(seed_m, i) ? m[i] * scale : 0) + h[i]
//       threshold 0 and scale 1: no dropout (inference), y = (a + m) + h.
//   parallel_residual_backward_{dtype}(dy, da, dm, threshold, scale, seed_a, seed_m, n)
//       da[i] = keep(seed_a, i) ? dy[i] * scale : 0, dm[i] likewise with seed_m, written (=); either may be null
//       (a branch that needs no gradient). dhidden is dy itself (no kernel).
//   Both: grid ((n + 255) / 256), block (256), no dynamic shared memory. Outputs must not overlap inputs.
// Cost per element (the launchers declare it): forward reads 3 and writes 1 element, 4 flops (two scales, two adds);
// backward reads 1 and writes 2, 2 flops.
#include "common.cuh"

template <typename D>
PHI2_DEVICE void parallel_residual(const typename D::type* a, const typename D::type* m, const typename D::type* h,
                                   typename D::type* y, unsigned threshold, float scale, unsigned long long seed_a,
                                   unsigned long long seed_m, int n)
{
    int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (i >= n) return;
    float da = dropout_bits24(seed_a, i) >= threshold ? __fmul_rn(load<D>(a, i), scale) : 0.0f;
    float dm = dropout_bits24(seed_m, i) >= threshold ? __fmul_rn(load<D>(m, i), scale) : 0.0f;
    store<D>(y, i, __fadd_rn(__fadd_rn(da, dm), load<D>(h, i)));
}

template <typename D>
PHI2_DEVICE void parallel_residual_backward(const typename D::type* dy, typename D::type* da, typename D::type* dm,
                                            unsigned threshold, float scale, unsigned long long seed_a,
                                            unsigned long long seed_m, int n)
{
    int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (i >= n) return;
    float g = load<D>(dy, i);
    if (da != nullptr) store<D>(da, i, dropout_bits24(seed_a, i) >= threshold ? __fmul_rn(g, scale) : 0.0f);
    if (dm != nullptr) store<D>(dm, i, dropout_bits24(seed_m, i) >= threshold ? __fmul_rn(g, scale) : 0.0f);
}

PHI2_KERNEL void parallel_residual_f32(const float* a, const float* m, const float* h, float* y, unsigned threshold,
                                       float scale, unsigned long long seed_a, unsigned long long seed_m, int n)
{
    parallel_residual<dtype_f32>(a, m, h, y, threshold, scale, seed_a, seed_m, n);
}
PHI2_KERNEL void parallel_residual_bf16(const bf16_t* a, const bf16_t* m, const bf16_t* h, bf16_t* y, unsigned threshold,
                                        float scale, unsigned long long seed_a, unsigned long long seed_m, int n)
{
    parallel_residual<dtype_bf16>(a, m, h, y, threshold, scale, seed_a, seed_m, n);
}
PHI2_KERNEL void parallel_residual_f16(const f16_t* a, const f16_t* m, const f16_t* h, f16_t* y, unsigned threshold,
                                       float scale, unsigned long long seed_a, unsigned long long seed_m, int n)
{
    parallel_residual<dtype_f16>(a, m, h, y, threshold, scale, seed_a, seed_m, n);
}

PHI2_KERNEL void parallel_residual_backward_f32(const float* dy, float* da, float* dm, unsigned threshold, float scale,
                                                unsigned long long seed_a, unsigned long long seed_m, int n)
{
    parallel_residual_backward<dtype_f32>(dy, da, dm, threshold, scale, seed_a, seed_m, n);
}
PHI2_KERNEL void parallel_residual_backward_bf16(const bf16_t* dy, bf16_t* da, bf16_t* dm, unsigned threshold, float scale,
                                                 unsigned long long seed_a, unsigned long long seed_m, int n)
{
    parallel_residual_backward<dtype_bf16>(dy, da, dm, threshold, scale, seed_a, seed_m, n);
}
PHI2_KERNEL void parallel_residual_backward_f16(const f16_t* dy, f16_t* da, f16_t* dm, unsigned threshold, float scale,
                                                unsigned long long seed_a, unsigned long long seed_m, int n)
{
    parallel_residual_backward<dtype_f16>(dy, da, dm, threshold, scale, seed_a, seed_m, n);
}
