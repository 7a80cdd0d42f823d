// layernorm.cu - LayerNorm over the last dimension (input_layernorm, final_layernorm) with torch.nn.LayerNorm
// semantics, as the CPU backend (src/Phi2Native.Backends/Ops/Normalization/CpuLayerNorm.cs): biased variance from a second
// pass over (x - mean) (not E[x^2] - E[x]^2, which cancels when |mean| >> std), eps inside the square root,
// statistics in fp32. x, gamma, beta, y, dY and dX are of the dtype; mean, rstd, dGamma and dBeta are fp32.
//
// Kernels (dtype: f32, bf16):
//   layernorm_{dtype}(x, gamma, beta, eps, y, mean, rstd, rows, C)
//       y = (x - mean) * rstd * gamma + beta, rstd = 1 / sqrt(var + eps), over each row of x [rows, C].
//       grid (rows), block (a multiple of 32, at most 1024: the launcher takes C rounded up to 32, at most
//       256), no dynamic shared memory.
//       Saves mean [rows] and rstd [rows] for backward, which also needs x and gamma (not y).
//   layernorm_backward_{dtype}(dY, x, gamma, mean, rstd, dX, dGamma, dBeta, accumulate, rows, C)
//       With xhat = (x - mean) * rstd and g = dY * gamma:
//       dX = rstd * (g - mean_c(g) - xhat * mean_c(g * xhat))  written (=), or with accumulate 1 added (+=) to what dX
//           holds: the gradient already pending for x (the residual stream's, from the parallel block's sum), so no
//           separate add. The sum is formed in fp32 from the stored dX and this fp32 term and rounded once, on store,
//           where a fresh dX and an add_{dtype} round the term to the dtype first (in bf16 one rounding fewer; in f32
//           the same one addition).
//       dGamma += sum over rows of dY * xhat, dBeta += sum over rows of dY  accumulated (+=), in fp32
//       Any of dX, dGamma, dBeta may be null: not needed, not computed. dX never aliases dY or x.
//       Per element it reads dY and x (and dX with accumulate), writes dX; ~10 flops (11 with accumulate).
//       grid (rows, or fewer: the launcher caps it when dGamma or dBeta is wanted), block as forward,
//       dynamic shared memory 2 * C floats when dGamma or dBeta is non-null (else 0).
//   Both kernels walk rows blockIdx.x, + gridDim.x, ..., one row per block at a time. In backward, thread t
//   owns columns t, t + blockDim.x, ... of every row it sees, so it sums its columns' dGamma/dBeta terms in
//   shared memory without conflicts or barriers, and the block adds them to dGamma/dBeta with one atomicAdd
//   per column at the end: fewer blocks, fewer atomics (the order of those adds varies run to run on a GPU).
#include "common.cuh"

template <typename D>
PHI2_DEVICE void layernorm(const typename D::type* x, const typename D::type* gamma, const typename D::type* beta, float eps,
                           typename D::type* y, float* mean, float* rstd, int rows, int C)
{
    __shared__ float scratch[32];
    for (int r = (int)blockIdx.x; r < rows; r += (int)gridDim.x)
    {
        const typename D::type* xr = x + (long long)r * C;
        typename D::type* yr = y + (long long)r * C;
        float s = 0.0f;
        for (int c = (int)threadIdx.x; c < C; c += (int)blockDim.x) s += load<D>(xr, c);
        float mu = block_sum(s, scratch) / (float)C;
        float ss = 0.0f;
        for (int c = (int)threadIdx.x; c < C; c += (int)blockDim.x)
        {
            float d = load<D>(xr, c) - mu;
            ss += d * d;
        }
        // 1 / sqrtf rather than rsqrtf: both are correctly rounded, where rsqrtf is an approximation.
        float rs = 1.0f / sqrtf(block_sum(ss, scratch) / (float)C + eps);
        for (int c = (int)threadIdx.x; c < C; c += (int)blockDim.x)
            store<D>(yr, c, (load<D>(xr, c) - mu) * rs * load<D>(gamma, c) + load<D>(beta, c));
        if (threadIdx.x == 0)
        {
            mean[r] = mu;
            rstd[r] = rs;
        }
    }
}

template <typename D>
PHI2_DEVICE void layernorm_backward(const typename D::type* dy, const typename D::type* x, const typename D::type* gamma,
                                    const float* mean, const float* rstd, typename D::type* dx, float* dgamma, float* dbeta,
                                    int accumulate, int rows, int C)
{
    __shared__ float scratch[32];
    PHI2_DYNAMIC_SHARED(float, partial); // [2, C]: this block's dGamma terms, then its dBeta terms
    float* pg = partial;
    float* pb = partial + C;
    if (dgamma || dbeta)
        for (int c = (int)threadIdx.x; c < C; c += (int)blockDim.x) pg[c] = pb[c] = 0.0f;
    for (int r = (int)blockIdx.x; r < rows; r += (int)gridDim.x)
    {
        const typename D::type* dyr = dy + (long long)r * C;
        const typename D::type* xr = x + (long long)r * C;
        float mu = mean[r], rs = rstd[r];
        float mean_g = 0.0f, mean_gxhat = 0.0f;
        // dx is the same pointer in every thread, so every thread reaches the barriers in block_sum or none does.
        if (dx)
        {
            float sg = 0.0f, sgx = 0.0f;
            for (int c = (int)threadIdx.x; c < C; c += (int)blockDim.x)
            {
                float g = load<D>(dyr, c) * load<D>(gamma, c);
                sg += g;
                sgx += g * ((load<D>(xr, c) - mu) * rs);
            }
            mean_g = block_sum(sg, scratch) / (float)C;
            mean_gxhat = block_sum(sgx, scratch) / (float)C;
        }
        typename D::type* dxr = dx ? dx + (long long)r * C : dx;
        for (int c = (int)threadIdx.x; c < C; c += (int)blockDim.x)
        {
            float d = load<D>(dyr, c);
            float xhat = (load<D>(xr, c) - mu) * rs;
            if (dx)
            {
                float v = rs * (d * load<D>(gamma, c) - mean_g - xhat * mean_gxhat);
                store<D>(dxr, c, accumulate ? __fadd_rn(load<D>(dxr, c), v) : v);
            }
            if (dgamma) pg[c] += d * xhat;
            if (dbeta) pb[c] += d;
        }
    }
    for (int c = (int)threadIdx.x; c < C; c += (int)blockDim.x)
    {
        if (dgamma) atomicAdd(dgamma + c, pg[c]);
        if (dbeta) atomicAdd(dbeta + c, pb[c]);
    }
}

PHI2_KERNEL void layernorm_f32(const float* x, const float* gamma, const float* beta, float eps, float* y, float* mean,
                               float* rstd, int rows, int C)
{
    layernorm<dtype_f32>(x, gamma, beta, eps, y, mean, rstd, rows, C);
}

PHI2_KERNEL void layernorm_bf16(const bf16_t* x, const bf16_t* gamma, const bf16_t* beta, float eps, bf16_t* y, float* mean,
                                float* rstd, int rows, int C)
{
    layernorm<dtype_bf16>(x, gamma, beta, eps, y, mean, rstd, rows, C);
}

PHI2_KERNEL void layernorm_backward_f32(const float* dy, const float* x, const float* gamma, const float* mean, const float* rstd,
                                        float* dx, float* dgamma, float* dbeta, int accumulate, int rows, int C)
{
    layernorm_backward<dtype_f32>(dy, x, gamma, mean, rstd, dx, dgamma, dbeta, accumulate, rows, C);
}

PHI2_KERNEL void layernorm_backward_bf16(const bf16_t* dy, const bf16_t* x, const bf16_t* gamma, const float* mean,
                                         const float* rstd, bf16_t* dx, float* dgamma, float* dbeta, int accumulate, int rows,
                                         int C)
{
    layernorm_backward<dtype_bf16>(dy, x, gamma, mean, rstd, dx, dgamma, dbeta, accumulate, rows, C);
}
