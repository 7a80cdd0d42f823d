// cast.cu - dtype conversions between f32, bf16 and f16, bit-exact with the CPU backend's Cast.
//
// Naming: cast_{from}_{to} converts a `from` buffer into a `to` buffer, e.g. cast_f32_bf16 rounds fp32 to
// bf16. One kernel per ordered pair of distinct dtypes (six); a same-dtype "cast" is a device copy.
//
// Kernels (all: grid ((n + 255) / 256), block (256), no dynamic shared memory; any covering grid works):
//   cast_{from}_{to}(x, y, n)  y[i] = x[i] converted; nothing saved (the backward of a cast is the reverse cast)
// Every conversion goes through fp32, as the CPU backend's does: widening bf16/f16 to fp32 is exact, so the
// result is rounded once, to nearest even (common.cuh's f32_to_bf16 / f32_to_f16): a NaN stays a NaN, a
// value past f16's range becomes +-Inf, values below half of f16's smallest subnormal become +-0.
// y must not overlap x (the element sizes differ, so threads would overwrite each other's inputs).
#include "common.cuh"

template <typename From, typename To>
PHI2_DEVICE void cast(const typename From::type* x, typename To::type* y, int n)
{
    int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (i < n) store<To>(y, i, load<From>(x, i));
}

PHI2_KERNEL void cast_f32_bf16(const float* x, bf16_t* y, int n) { cast<dtype_f32, dtype_bf16>(x, y, n); }
PHI2_KERNEL void cast_f32_f16(const float* x, f16_t* y, int n) { cast<dtype_f32, dtype_f16>(x, y, n); }
PHI2_KERNEL void cast_bf16_f32(const bf16_t* x, float* y, int n) { cast<dtype_bf16, dtype_f32>(x, y, n); }
PHI2_KERNEL void cast_bf16_f16(const bf16_t* x, f16_t* y, int n) { cast<dtype_bf16, dtype_f16>(x, y, n); }
PHI2_KERNEL void cast_f16_f32(const f16_t* x, float* y, int n) { cast<dtype_f16, dtype_f32>(x, y, n); }
PHI2_KERNEL void cast_f16_bf16(const f16_t* x, bf16_t* y, int n) { cast<dtype_f16, dtype_bf16>(x, y, n); }
