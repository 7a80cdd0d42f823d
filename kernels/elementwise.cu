// elementwise.cu - elementwise ops over contiguous buffers, computed in fp32 and rounded once on store.
//
// Kernels (dtype: f32, bf16, f16; all: grid ((n + 255) / 256), block (256), no dynamic shared memory;
// any block size and any grid that covers n work):
//   add_{dtype}(a, b, y, n)    y[i] = a[i] + b[i]    backward: dA = dB = dY, nothing saved
//   scale_{dtype}(x, y, a, n)  y[i] = a * x[i]       backward: dX = a * dY, nothing saved
// y may alias a, b or x (each element is read before it is written, by the same thread). alpha is an
// fp32 scalar whatever the dtype, as the CPU backend's ScaleInPlace takes (float)factor.
//
// Gradient accumulation (f32 only, as gradients are fp32; same launch shape as above):
//   accumulate_f32(x, y, n)    y[i] += x[i]    the CPU backend's AddInPlace(y, x); y may alias x
//
// Scaling by a scalar in device memory (a loss's upstream gradient, read without a host wait; same launch shape):
//   scale_by_{f32,bf16}(x, y, alpha, n)     y[i] = alpha[0] * x[i]            y may alias x
//   accumulate_scaled_f32(x, y, alpha, n)   y[i] = y[i] + alpha[0] * x[i]     two roundings (multiply, then add: no
//                                           FMA), as the CPU backend's; y must not alias x
// 1 read (2 for accumulate_scaled) and 1 write per element, 1 (2) flops; alpha is read by every thread (cached).
#include "common.cuh"

template <typename D>
PHI2_DEVICE void add(const typename D::type* a, const typename D::type* b, typename D::type* y, int n)
{
    int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (i < n) store<D>(y, i, load<D>(a, i) + load<D>(b, i));
}

template <typename D>
PHI2_DEVICE void scale(const typename D::type* x, typename D::type* y, float alpha, int n)
{
    int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (i < n) store<D>(y, i, alpha * load<D>(x, i));
}

PHI2_KERNEL void add_f32(const float* a, const float* b, float* y, int n) { add<dtype_f32>(a, b, y, n); }
PHI2_KERNEL void add_bf16(const bf16_t* a, const bf16_t* b, bf16_t* y, int n) { add<dtype_bf16>(a, b, y, n); }
PHI2_KERNEL void add_f16(const f16_t* a, const f16_t* b, f16_t* y, int n) { add<dtype_f16>(a, b, y, n); }

PHI2_KERNEL void scale_f32(const float* x, float* y, float alpha, int n) { scale<dtype_f32>(x, y, alpha, n); }
PHI2_KERNEL void scale_bf16(const bf16_t* x, bf16_t* y, float alpha, int n) { scale<dtype_bf16>(x, y, alpha, n); }
PHI2_KERNEL void scale_f16(const f16_t* x, f16_t* y, float alpha, int n) { scale<dtype_f16>(x, y, alpha, n); }

template <typename D>
PHI2_DEVICE void scale_by(const typename D::type* x, typename D::type* y, const float* alpha, int n)
{
    int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (i < n) store<D>(y, i, __fmul_rn(*alpha, load<D>(x, i)));
}

PHI2_KERNEL void scale_by_f32(const float* x, float* y, const float* alpha, int n) { scale_by<dtype_f32>(x, y, alpha, n); }
PHI2_KERNEL void scale_by_bf16(const bf16_t* x, bf16_t* y, const float* alpha, int n) { scale_by<dtype_bf16>(x, y, alpha, n); }

PHI2_KERNEL void accumulate_scaled_f32(const float* x, float* y, const float* alpha, int n)
{
    int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (i < n) y[i] = __fadd_rn(y[i], __fmul_rn(*alpha, x[i]));
}

// Gradient accumulation: fp32 gradients of one micro-batch added into the running sum.
PHI2_KERNEL void accumulate_f32(const float* x, float* y, int n)
{
    int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (i < n) y[i] += x[i];
}
