// gelu.cu - gelu_new, the tanh form of GELU that Phi-2's MLP uses (hidden_act = "gelu_new"), computed in fp32 as
// the CPU backend computes it (src/Phi2Native.Backends/Ops/Activation/CpuGelu.cs), operation for operation:
//   u = (x * c a * x + c) * x = c (x + a x^3),  c = sqrt(2/pi), a = 0.044715
//   y = 0.5 x tanh(u) + 0.5 x
//   dy/dx = 0.5 (1 + tanh u) (1 + (1 - tanh u) w),  w = x u' = (x * 3 c a * x + c) * x
// Inputs and outputs are of the dtype, widened exactly and rounded once on store; dBias is fp32.
//
// Kernels (dtype: f32, bf16, f16):
//   gelu_new_{dtype}(x, y, n)                  y[i] = gelu_new(x[i])
//       Saves nothing: backward needs the input x (not y).
//   gelu_new_backward_{dtype}(dy, x, dx, n)    dx[i] = dy[i] * gelu_new'(x[i])  written (=)
//       Both: grid ((n + 255) / 256), block (256), no dynamic shared memory (any grid that covers n works).
//       y may alias x; dx may alias dy or x (each element is read before it is written, by the same thread).
//
//   bias_gelu_new_{dtype}(x, bias, y, pre, rows, C)
//       The MLP's fc1 epilogue over x [rows, C] (a GEMM's output without its bias) and bias [C]:
//       h = x[r, c] + bias[c], rounded to the dtype (what an unfused Linear would store), y[r, c] = gelu_new(h).
//       Saves pre = h [rows, C] for backward (cuBLASLt's GELU_AUX_BIAS "aux"); pre null: not saved (inference).
//       y and pre may each alias x; pre must not be y.
//   bias_gelu_new_backward_{dtype}(dy, pre, dx, dbias, rows, C)
//       dx[r, c] = dy[r, c] * gelu_new'(pre[r, c])  written (=), the gradient of both x and h
//       dbias[c] += sum over rows of dx[r, c]       accumulated (+=), fp32, from the unrounded fp32 dx
//       Either output may be null: not needed, not computed. dx may alias dy or pre.
//   Both: grid ((C + blockDim.x - 1) / blockDim.x, R) with 1 <= R <= rows (the launcher takes min(rows, 65535), or
//       min(rows, 64) in backward when dbias is wanted), block (any size; the launcher takes C rounded up to whole
//       warps, at most 256), no dynamic shared memory. Thread t of block (bx, by) owns column
//       c = bx * blockDim.x + t (consecutive threads, consecutive addresses) of rows by, by + gridDim.y, ...; in
//       backward it sums its column's dbias terms in a register and adds them to dbias with one atomicAdd at the
//       end (gridDim.y atomics per column; their order varies run to run on a GPU, so dbias is deterministic only
//       with gridDim.y == 1).
#include "common.cuh"

// The constants are CpuGelu's doubles rounded to fp32 (written with the 9 digits that name exactly that float):
// c = sqrt(2/pi) (0x3f4c422a), c a (0x3d122279), 3 c a (0x3ddb33b6).

PHI2_DEVICE float gelu_new_f(float x)
{
    const float c = 0.797884583f, ca = 0.0356774069f;
    float u = (x * ca * x + c) * x;
    float t = tanhf(u);
    float h = 0.5f * x;
    return t * h + h;
}

// d gelu_new / dx at x.
PHI2_DEVICE float gelu_new_grad_f(float x)
{
    const float c = 0.797884583f, ca = 0.0356774069f, ca3 = 0.107032225f;
    float t = tanhf((x * ca * x + c) * x);
    float w = (x * ca3 * x + c) * x;
    float g = (1.0f - t) * w + 1.0f;
    g = t * g + g;
    return 0.5f * g;
}

template <typename D>
PHI2_DEVICE void gelu_new(const typename D::type* x, typename D::type* y, int n)
{
    int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (i < n) store<D>(y, i, gelu_new_f(load<D>(x, i)));
}

template <typename D>
PHI2_DEVICE void gelu_new_backward(const typename D::type* dy, const typename D::type* x, typename D::type* dx, int n)
{
    int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (i < n) store<D>(dx, i, gelu_new_grad_f(load<D>(x, i)) * load<D>(dy, i));
}

template <typename D>
PHI2_DEVICE void bias_gelu_new(const typename D::type* x, const typename D::type* bias, typename D::type* y,
                               typename D::type* pre, int rows, int C)
{
    int c = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (c >= C) return;
    float b = load<D>(bias, c);
    for (int r = (int)blockIdx.y; r < rows; r += (int)gridDim.y)
    {
        long long i = (long long)r * C + c;
        // Round h to the dtype first: y and pre then agree with an unfused Linear (bias in its epilogue) + gelu_new.
        typename D::type h = D::from_f32(load<D>(x, i) + b);
        if (pre) pre[i] = h;
        store<D>(y, i, gelu_new_f(D::to_f32(h)));
    }
}

template <typename D>
PHI2_DEVICE void bias_gelu_new_backward(const typename D::type* dy, const typename D::type* pre, typename D::type* dx,
                                        float* dbias, int rows, int C)
{
    int c = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (c >= C) return;
    float sum = 0.0f;
    for (int r = (int)blockIdx.y; r < rows; r += (int)gridDim.y)
    {
        long long i = (long long)r * C + c;
        float d = gelu_new_grad_f(load<D>(pre, i)) * load<D>(dy, i);
        if (dx) store<D>(dx, i, d);
        sum += d;
    }
    if (dbias) atomicAdd(dbias + c, sum);
}

PHI2_KERNEL void gelu_new_f32(const float* x, float* y, int n) { gelu_new<dtype_f32>(x, y, n); }
PHI2_KERNEL void gelu_new_bf16(const bf16_t* x, bf16_t* y, int n) { gelu_new<dtype_bf16>(x, y, n); }
PHI2_KERNEL void gelu_new_f16(const f16_t* x, f16_t* y, int n) { gelu_new<dtype_f16>(x, y, n); }

PHI2_KERNEL void gelu_new_backward_f32(const float* dy, const float* x, float* dx, int n) { gelu_new_backward<dtype_f32>(dy, x, dx, n); }
PHI2_KERNEL void gelu_new_backward_bf16(const bf16_t* dy, const bf16_t* x, bf16_t* dx, int n) { gelu_new_backward<dtype_bf16>(dy, x, dx, n); }
PHI2_KERNEL void gelu_new_backward_f16(const f16_t* dy, const f16_t* x, f16_t* dx, int n) { gelu_new_backward<dtype_f16>(dy, x, dx, n); }

PHI2_KERNEL void bias_gelu_new_f32(const float* x, const float* bias, float* y, float* pre, int rows, int C)
{
    bias_gelu_new<dtype_f32>(x, bias, y, pre, rows, C);
}

PHI2_KERNEL void bias_gelu_new_bf16(const bf16_t* x, const bf16_t* bias, bf16_t* y, bf16_t* pre, int rows, int C)
{
    bias_gelu_new<dtype_bf16>(x, bias, y, pre, rows, C);
}

PHI2_KERNEL void bias_gelu_new_f16(const f16_t* x, const f16_t* bias, f16_t* y, f16_t* pre, int rows, int C)
{
    bias_gelu_new<dtype_f16>(x, bias, y, pre, rows, C);
}

PHI2_KERNEL void bias_gelu_new_backward_f32(const float* dy, const float* pre, float* dx, float* dbias, int rows, int C)
{
    bias_gelu_new_backward<dtype_f32>(dy, pre, dx, dbias, rows, C);
}

PHI2_KERNEL void bias_gelu_new_backward_bf16(const bf16_t* dy, const bf16_t* pre, bf16_t* dx, float* dbias, int rows, int C)
{
    bias_gelu_new_backward<dtype_bf16>(dy, pre, dx, dbias, rows, C);
}

PHI2_KERNEL void bias_gelu_new_backward_f16(const f16_t* dy, const f16_t* pre, f16_t* dx, float* dbias, int rows, int C)
{
    bias_gelu_new_backward<dtype_f16>(dy, pre, dx, dbias, rows, C);
}
