// elementwise.cu - elementwise ops over contiguous buffers.
//
// Kernels (all: grid ((n + 255) / 256), block (256), no dynamic shared memory; any block size works):
//   add_f32(a, b, y, n)    y[i] = a[i] + b[i]    backward: dA = dB = dY, nothing saved
//   scale_f32(x, y, a, n)  y[i] = a * x[i]       backward: dX = a * dY, nothing saved
// y may alias a, b or x (each element is read before it is written, by the same thread).
#include "common.cuh"

template <typename T>
PHI2_DEVICE void add(const T* a, const T* b, T* y, int n)
{
    int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (i < n) y[i] = a[i] + b[i];
}

template <typename T>
PHI2_DEVICE void scale(const T* x, T* y, float alpha, int n)
{
    int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (i < n) y[i] = (T)(alpha * x[i]);
}

PHI2_KERNEL void add_f32(const float* a, const float* b, float* y, int n) { add<float>(a, b, y, n); }
PHI2_KERNEL void scale_f32(const float* x, float* y, float alpha, int n) { scale<float>(x, y, alpha, n); }
