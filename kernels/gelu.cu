// gelu.cu - gelu_new, the tanh form of GELU that Phi-2's MLP uses (hidden_act = "gelu_new"), computed in fp32 as
// the CPU backend computes it (src/Phi2Native.Backends/Ops/Activation/CpuGelu.cs), operation for operation:
//   u = (x * c a * x + c) * x = c (x + a x^3),  c = sqrt(2/pi), a = 0.044715
//   y = 0.5 x tanh(u) + 0.5 x
//   dy/dx = 0.5 (1 + tanh u) (1 + (1 - tanh u) w),  w = x u' = (x * 3 c a * x + c) * x
// Inputs and outputs are of the dtype, widened exactly and rounded once on store; dBias is fp32.
//
// Kernels (dtype: f32, bf16, f16):
//   gelu_new_{dtype}(x, y, n)                  y[i] = gelu_new(x[i])
//       Saves nothing: backward needs the input x (not y). Grid ((ceil(n / V) + 255) / 256), block (256), V = 16 /
//       sizeof(dtype) (4 fp32, 8 bf16/fp16): thread t owns elements V t .. V t + V - 1, one 16-byte load and store when
//       both pointers are 16-byte aligned and the V elements exist, else one element at a time (the tail).
//       This is also LinearGeluOp's fallback epilogue, over the pre-activation h that fc1's GEMM wrote with its bias in
//       cuBLASLt's BIAS epilogue (y = gelu_new(h), h saved as is): see bias_gelu_new below for why not that kernel.
//   gelu_new_backward_{dtype}(dy, x, dx, n)    dx[i] = dy[i] * gelu_new'(x[i])  written (=)
//       Grid ((n + 255) / 256), block (256), no dynamic shared memory (any grid that covers n works).
//   Both: y may alias x; dx may alias dy or x (each element is read before it is written, by the same thread).
//
//   bias_gelu_new_{dtype}(x, bias, y, pre, rows, C)
//       An MLP epilogue over x [rows, C] (a GEMM's output without its bias) and bias [C]: h = x[r, c] + bias[c],
//       rounded to the dtype, y[r, c] = gelu_new(h). Saves pre = h [rows, C] for backward (cuBLASLt's GELU_AUX_BIAS
//       "aux"); pre null: not saved (inference).
//       Not LinearGeluOp's fallback, by measurement of what it costs: with x rounded to the dtype by the GEMM and h
//       rounded again, h is off by half an ulp of |x W^T| where x W^T and the bias cancel (68x bf16's tolerance on
//       the emulator's LinearGelu check), where cuBLASLt's BIAS epilogue adds the bias in fp32 and rounds once; and it
//       moves more bytes per element (GEMM writes x, this reads x, writes y and pre: 4 [rows, C] passes) than the BIAS
//       epilogue writing pre and gelu_new reading pre and writing y (3). The pre-activation is saved rather than
//       recomputed in backward either way: recomputing needs fc1's GEMM again (2 rows C in flops and its weight read
//       again) where saving costs one [rows, C] write and one read, streamed with y.
//       y and pre may each alias x; pre must not be y.
//       Grid ((G + blockDim.x - 1) / blockDim.x, R) with G = ceil(C / V) column vectors, V = 16 / sizeof(dtype)
//       (4 fp32, 8 bf16/fp16) and 1 <= R <= rows (the launcher takes min(rows, 65535)); block (any size; the launcher
//       takes G rounded up to whole warps, at most 256); no dynamic shared memory. Thread t of block (bx, by) owns
//       columns V g .. V g + V - 1, g = bx * blockDim.x + t, of rows by, by + gridDim.y, ...: with C a multiple of V and
//       every pointer 16-byte aligned each row's vector is one 16-byte load of x, and one 16-byte store each of y and
//       pre (a warp moves 512 contiguous bytes); otherwise the same elements one at a time.
//       Per element: reads x (and bias once per thread), writes y and pre: 2 (3 with pre) dtype elements, ~11 flops.
//   bias_gelu_new_backward_{dtype}(dy, pre, dx, dbias, rows, C)
//       dx[r, c] = dy[r, c] * gelu_new'(pre[r, c])  written (=), the gradient of both x and h
//       dbias[c] += sum over rows of dx[r, c]       accumulated (+=), fp32, from the unrounded fp32 dx
//       Either output may be null: not needed, not computed. dx may alias dy or pre.
//       Grid (ceil(C / 64)), block (64 / V, 32) (V as above: (16, 32) for fp32, (8, 32) for bf16/fp16), no dynamic
//       shared memory (8 KB static). Block bx owns columns 64 bx .. 64 bx + 63; thread (tx, ty) owns the V columns
//       64 bx + V tx .. of rows ty, ty + 32, ... (16-byte vectors as forward, or one element at a time), summing its
//       dbias terms in registers in row order; the block then adds its 32 row lanes' sums in lane order (shared
//       memory) and one thread per column adds the total to dbias. No atomics: the sum order is fixed by the shape
//       alone, so dbias is bit-identical run to run (a deterministic training step), and each column of dbias has one
//       writer. Per element: reads dy and pre, writes dx: 3 dtype elements, ~11 flops; dbias read and written once.
//   Occupancy (resources.tsv): the 16-bit bias kernels hold 8 elements a thread in 37..48 registers, 62.5..75 % occupancy
//   on sm_80/sm_90, their floors lowered to that on purpose: each thread keeps two 16-byte loads in flight, so even at
//   62.5 % an SM has 1280 x 32 = 40 KB of loads outstanding, above HBM's latency-bandwidth product per SM (about
//   3.35 TB/s x 0.6 us / 132 SMs = 15 KB on an H100; modelled, not measured).
#include "common.cuh"
#include "gelu.cuh"

template <typename D>
PHI2_DEVICE void gelu_new(const typename D::type* x, typename D::type* y, int n)
{
    typedef typename D::type T;
    const int V = vec16_of<D>::count;
    long long i0 = ((long long)blockIdx.x * blockDim.x + threadIdx.x) * V;
    if (i0 >= n) return;
    if (i0 + V <= n && aligned16(x) && aligned16(y))
    {
        float v[V];
        load16<D>(x + i0, v);
        T o[V];
        for (int e = 0; e < V; e++) o[e] = D::from_f32(gelu_new_f(v[e]));
        store16<D>(y + i0, o);
        return;
    }
    for (long long i = i0; i < n && i < i0 + V; i++) store<D>(y, i, gelu_new_f(load<D>(x, i)));
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
    typedef typename D::type T;
    const int V = vec16_of<D>::count;
    int groups = (C + V - 1) / V;
    int g = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (g >= groups) return;
    int c0 = g * V;
    // Uniform across the launch: every row then starts 16-byte aligned, and so does every thread's vector.
    bool whole = C % V == 0 && aligned16(x) && aligned16(bias) && aligned16(y) && (pre == 0 || aligned16(pre));
    if (whole)
    {
        float b[V], v[V];
        load16<D>(bias + c0, b);
        for (int r = (int)blockIdx.y; r < rows; r += (int)gridDim.y)
        {
            long long i = (long long)r * C + c0;
            load16<D>(x + i, v);
            T h[V], o[V];
            for (int e = 0; e < V; e++)
            {
                // Round h to the dtype first: y and pre then agree with an unfused Linear (bias in its epilogue) + gelu_new.
                h[e] = D::from_f32(v[e] + b[e]);
                o[e] = D::from_f32(gelu_new_f(D::to_f32(h[e])));
            }
            if (pre) store16<D>(pre + i, h);
            store16<D>(y + i, o);
        }
        return;
    }
    int end = c0 + V < C ? c0 + V : C;
    for (int c = c0; c < end; c++)
    {
        float b = load<D>(bias, c);
        for (int r = (int)blockIdx.y; r < rows; r += (int)gridDim.y)
        {
            long long i = (long long)r * C + c;
            T h = D::from_f32(load<D>(x, i) + b);
            if (pre) pre[i] = h;
            store<D>(y, i, gelu_new_f(D::to_f32(h)));
        }
    }
}

// Columns per block and row lanes per block of bias_gelu_new_backward (its header: block (64 / V, 32)).
#define PHI2_BIAS_GELU_COLUMNS 64
#define PHI2_BIAS_GELU_LANES 32

template <typename D>
PHI2_DEVICE void bias_gelu_new_backward(const typename D::type* dy, const typename D::type* pre, typename D::type* dx,
                                        float* dbias, int rows, int C)
{
    typedef typename D::type T;
    const int V = vec16_of<D>::count;
    __shared__ float lane_sums[PHI2_BIAS_GELU_LANES][PHI2_BIAS_GELU_COLUMNS];
    int tx = (int)threadIdx.x, ty = (int)threadIdx.y;
    int c0 = (int)blockIdx.x * PHI2_BIAS_GELU_COLUMNS + tx * V;
    float sum[V];
    for (int e = 0; e < V; e++) sum[e] = 0.0f;
    bool whole = C % V == 0 && aligned16(dy) && aligned16(pre) && (dx == 0 || aligned16(dx));
    if (c0 < C)
    {
        for (int r = ty; r < rows; r += PHI2_BIAS_GELU_LANES)
        {
            long long i = (long long)r * C + c0;
            if (whole)
            {
                float g[V], p[V];
                load16<D>(dy + i, g);
                load16<D>(pre + i, p);
                T o[V];
                for (int e = 0; e < V; e++)
                {
                    float d = gelu_new_grad_f(p[e]) * g[e];
                    o[e] = D::from_f32(d);
                    sum[e] += d;
                }
                if (dx) store16<D>(dx + i, o);
            }
            else
            {
                for (int e = 0; e < V && c0 + e < C; e++)
                {
                    float d = gelu_new_grad_f(load<D>(pre, i + e)) * load<D>(dy, i + e);
                    if (dx) store<D>(dx, i + e, d);
                    sum[e] += d;
                }
            }
        }
    }
    if (dbias == 0) return; // uniform: no thread reaches the barrier below
    for (int e = 0; e < V; e++) lane_sums[ty][tx * V + e] = sum[e];
    __syncthreads();
    int t = ty * (int)blockDim.x + tx, c = (int)blockIdx.x * PHI2_BIAS_GELU_COLUMNS + t;
    if (t < PHI2_BIAS_GELU_COLUMNS && c < C)
    {
        float total = 0.0f;
        for (int lane = 0; lane < PHI2_BIAS_GELU_LANES; lane++) total += lane_sums[lane][t];
        dbias[c] += total;
    }
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
