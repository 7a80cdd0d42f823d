// adamw.cu - one AdamW update (torch.optim.AdamW, amsgrad off), elementwise over a parameter p [n], its gradient
// g [n] and its moments m (exp_avg) and v (exp_avg_sq) [n], all fp32, exactly as the CPU backend
// (src/Phi2Native/Backends/Cpu/CpuAdamW.cs; IBackend.AdamWStep):
//
//   p = p * decay                                   decoupled weight decay, decay = 1 - lr wd, before anything else
//   m = m * beta1 + g * one_minus_beta1
//   v = v * beta2 + (g * one_minus_beta2) * g
//   p = (m / (sqrt(v) / correction2_root + eps)) * negative_step_size + p
//
// with the step's scalars formed on the host in double and rounded once to fp32, as the CPU does
// (src/Phi2Native/Backends/Cuda/AdamWKernels.cs): decay = 1 - lr wd, one_minus_beta1 = 1 - beta1,
// one_minus_beta2 = 1 - beta2, negative_step_size = -lr / (1 - beta1^step), correction2_root = sqrt(1 - beta2^step).
// Every operation is one fp32 operation rounded to nearest, in the CPU's order: the _rn intrinsics keep the
// compiler from contracting a multiply and an add into an FMA (which NVRTC does by default), and sqrt and division
// are the correctly rounded ones, so the result equals the CPU backend's bit for bit. (decay = 1 multiplies by 1,
// which changes nothing, where the CPU skips the multiply.)
//
// Kernels (dtype of p and g: f32; m and v are fp32 whatever the dtype; all: grid ((n + 255) / 256), block (256),
// no dynamic shared memory; any covering grid works):
//   adamw_{dtype}(p, g, m, v, decay, beta1, one_minus_beta1, beta2, one_minus_beta2, negative_step_size,
//             correction2_root, eps, n)
//       p, m and v updated in place; g read only. No backward, nothing saved. The four buffers must not overlap.
// Gradient clipping is not folded in: as on the CPU, GradientClipping scales the gradients first (ScaleInPlace,
// elementwise.cu's scale) and this kernel reads them as they are.
#include "common.cuh"

template <typename D>
PHI2_DEVICE void adamw(typename D::type* p, const typename D::type* g, float* m, float* v, float decay, float beta1,
                       float one_minus_beta1, float beta2, float one_minus_beta2, float negative_step_size,
                       float correction2_root, float eps, int n)
{
    int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (i >= n) return;
    float gi = load<D>(g, i);
    float pi = __fmul_rn(load<D>(p, i), decay);
    float mi = __fadd_rn(__fmul_rn(m[i], beta1), __fmul_rn(gi, one_minus_beta1));
    float vi = __fadd_rn(__fmul_rn(v[i], beta2), __fmul_rn(__fmul_rn(gi, one_minus_beta2), gi));
    float denominator = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), correction2_root), eps);
    pi = __fadd_rn(__fmul_rn(__fdiv_rn(mi, denominator), negative_step_size), pi);
    store<D>(p, i, pi);
    m[i] = mi;
    v[i] = vi;
}

PHI2_KERNEL void adamw_f32(float* p, const float* g, float* m, float* v, float decay, float beta1, float one_minus_beta1,
                           float beta2, float one_minus_beta2, float negative_step_size, float correction2_root, float eps, int n)
{
    adamw<dtype_f32>(p, g, m, v, decay, beta1, one_minus_beta1, beta2, one_minus_beta2, negative_step_size, correction2_root, eps, n);
}
