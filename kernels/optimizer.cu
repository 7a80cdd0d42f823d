// optimizer.cu - a training step's check and update over all its tensors at once (multi-tensor launches), so that
// the host queues backward, the check and the update without waiting, and reads the steps' status blocks in one copy.
//
//   1. chunk_sum_of_squares_{dtype}: fp32 sums of squares of fixed chunks of many tensors (one block a chunk).
//   2. step_status: one block folds the chunk sums per tensor and over tensors (in double), adds the step's losses,
//      finds the first tensor whose sum of squares is not finite, and writes the step's status block: the verdict
//      (skip: the update must do nothing; also when the previous step of the read window was skipped) and the clip
//      scale of torch.nn.utils.clip_grad_norm_.
//   3. adamw_chunks_f32: one torch.optim.AdamW update of every parameter, each gradient times the clip scale, read
//      from the status block; a step the status marks skipped changes nothing. Bit for bit the CPU backend's
//      (src/Phi2Native.Backends/Ops/Optimizer/CpuOptimizer.cs).
//
// Tables (device memory, written by the host; layouts shared with OptimizerKernels.cs, 8-byte aligned):
//   tensor_chunk { long long start; int tensor; int count; }   16 bytes: elements [start, start + count) of tensor
//       `tensor`, count >= 1. Chunks of one tensor are consecutive.
//   chunk_range { int first; int end; }                        8 bytes: tensor i's chunks (and partials) are
//       [first, end); first == end for an empty or absent tensor.
//   adamw_tensor { p, g, m, v (8-byte pointers); float decay, beta1, one_minus_beta1, beta2, one_minus_beta2,
//       negative_step_size, correction2_root, eps; }          64 bytes: one parameter [n] (fp32), its gradient [n]
//       (fp32), its fp32 moments exp_avg and exp_avg_sq [n], and its step's scalars, each formed on the host in
//       double and rounded once to fp32 (decay = 1 - lr wd, negative_step_size = -lr / (1 - beta1^step),
//       correction2_root = sqrt(1 - beta2^step)).
//   status_block (the status block, 40 bytes):
//       double loss_sum;       the step's micro-batch losses (fp32 scalars) added in double, in their order
//       double sum_of_squares; every tensor's sum of squares (its fp32 chunk sums added in double), added in order
//       double first_squares;  the first non-finite tensor's sum of squares (NaN or inf); 0 when there is none
//       double clip_scale;     max_norm / (sqrt(sum_of_squares) + 1e-6) when that is below 1, else 1 (and 1 when
//                              max_norm <= 0: no clipping)
//       int first_non_finite;  index of the first tensor whose sum of squares is not finite; -1 when none
//       int skip;              1 when the loss sum, a tensor's or the total sum of squares is not finite, or when the
//                              previous block of the window says skip (a halted step), else 0
//
// Kernels (all: block (256), no dynamic shared memory):
//   chunk_sum_of_squares_{dtype}(tensors, chunks, partial)   dtype of the tensors: f32, bf16, f16
//       tensors: 8-byte pointers; chunks: tensor_chunk [G]; partial: fp32 [G], partial[b] = sum over chunk b of x^2
//       (fp32, each thread's strided elements then block_sum's fixed tree). grid (G).
//   step_status(partial, ranges, tensors, losses, loss_count, max_norm, tensor_sums, previous, status)
//       partial: fp32 [chunks]; ranges: chunk_range [tensors]; losses: 8-byte pointers to fp32 scalars [loss_count];
//       max_norm: double; tensor_sums: double workspace [tensors]; previous: the status_block of the step queued
//       before this one in the same read window, or null for a window's first step; status: status_block. grid (1).
//       A step whose previous block says skip is skipped too (skip = 1, its own values still measured): once a step
//       of a window is skipped, the steps queued after it update nothing, so when the host reads the window the
//       parameters are those before its first skipped step (the host re-runs the halted steps).
//   adamw_chunks_f32(tensors, chunks, status)
//       tensors: adamw_tensor [P]; chunks: tensor_chunk [G] over them; status: status_block, or null (scale 1, never
//       skipped). p, m and v updated in place, g read only; the four buffers of a parameter must not overlap, nor two
//       parameters' buffers. grid (G).
// Deterministic: fixed chunks, fixed trees, fixed fold orders; no atomics. Nothing here has a backward.
//
// AdamW's arithmetic: every operation one fp32 operation rounded to nearest, in the CPU's order (the _rn intrinsics
// keep NVRTC from contracting a multiply and an add into an FMA; sqrt and division correctly rounded):
//   g = g * clip_scale (only when clip_scale != 1: the CPU scales in place first, the same single rounding)
//   p = p * decay; m = m * beta1 + g * one_minus_beta1; v = v * beta2 + (g * one_minus_beta2) * g
//   p = (m / (sqrt(v) / correction2_root + eps)) * negative_step_size + p
#include "common.cuh"

struct tensor_chunk
{
    long long start;
    int tensor;
    int count;
};

struct chunk_range
{
    int first;
    int end;
};

struct adamw_tensor
{
    float* p;
    const float* g;
    float* m;
    float* v;
    float decay, beta1, one_minus_beta1, beta2, one_minus_beta2, negative_step_size, correction2_root, eps;
};

struct status_block
{
    double loss_sum;
    double sum_of_squares;
    double first_squares;
    double clip_scale;
    int first_non_finite;
    int skip;
};

// False for NaN and both infinities: x - x is NaN for them and exactly 0 otherwise (no fast-math here).
PHI2_DEVICE bool is_finite(double x) { return x - x == 0.0; }

template <typename D>
PHI2_DEVICE void chunk_sum_of_squares(const unsigned long long* tensors, const tensor_chunk* chunks, float* partial)
{
    __shared__ float scratch[32];
    tensor_chunk chunk = chunks[blockIdx.x];
    const typename D::type* x = reinterpret_cast<const typename D::type*>(tensors[chunk.tensor]) + chunk.start;
    float v = 0.0f;
    for (int i = (int)threadIdx.x; i < chunk.count; i += (int)blockDim.x)
    {
        float e = load<D>(x, i);
        v += e * e;
    }
    v = block_sum(v, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = v;
}

PHI2_KERNEL void chunk_sum_of_squares_f32(const unsigned long long* tensors, const tensor_chunk* chunks, float* partial)
{
    chunk_sum_of_squares<dtype_f32>(tensors, chunks, partial);
}
PHI2_KERNEL void chunk_sum_of_squares_bf16(const unsigned long long* tensors, const tensor_chunk* chunks, float* partial)
{
    chunk_sum_of_squares<dtype_bf16>(tensors, chunks, partial);
}
PHI2_KERNEL void chunk_sum_of_squares_f16(const unsigned long long* tensors, const tensor_chunk* chunks, float* partial)
{
    chunk_sum_of_squares<dtype_f16>(tensors, chunks, partial);
}

PHI2_KERNEL void step_status(const float* partial, const chunk_range* ranges, int tensors, const unsigned long long* losses,
                             int loss_count, double max_norm, double* tensor_sums, const status_block* previous,
                             status_block* status)
{
    // Per tensor, in parallel: its chunk sums in order, in double.
    for (int t = (int)threadIdx.x; t < tensors; t += (int)blockDim.x)
    {
        double sum = 0.0;
        for (int c = ranges[t].first; c < ranges[t].end; c++) sum += (double)partial[c];
        tensor_sums[t] = sum;
    }
    __syncthreads();
    if (threadIdx.x != 0) return;
    // Over tensors and losses, in order, by one thread: a few hundred adds, and the same order on every device.
    double total = 0.0, first_squares = 0.0, loss_sum = 0.0;
    int first = -1;
    for (int t = 0; t < tensors; t++)
    {
        double sum = tensor_sums[t];
        total += sum;
        if (first < 0 && !is_finite(sum))
        {
            first = t;
            first_squares = sum;
        }
    }
    for (int i = 0; i < loss_count; i++) loss_sum += (double)*reinterpret_cast<const float*>(losses[i]);
    double scale = 1.0;
    if (max_norm > 0.0)
    {
        double coefficient = max_norm / (sqrt(total) + 1e-6);
        if (coefficient < 1.0) scale = coefficient;
    }
    status->loss_sum = loss_sum;
    status->sum_of_squares = total;
    status->first_squares = first_squares;
    status->clip_scale = scale;
    status->first_non_finite = first;
    bool halted = previous != nullptr && previous->skip != 0;
    status->skip = (halted || first >= 0 || !is_finite(total) || !is_finite(loss_sum)) ? 1 : 0;
}

PHI2_KERNEL void adamw_chunks_f32(const adamw_tensor* tensors, const tensor_chunk* chunks, const status_block* status)
{
    if (status != nullptr && status->skip) return;
    float scale = status != nullptr ? (float)status->clip_scale : 1.0f;
    tensor_chunk chunk = chunks[blockIdx.x];
    adamw_tensor t = tensors[chunk.tensor];
    for (int j = (int)threadIdx.x; j < chunk.count; j += (int)blockDim.x)
    {
        long long i = chunk.start + j;
        float gi = load<dtype_f32>(t.g, i);
        if (scale != 1.0f) gi = __fmul_rn(gi, scale);
        float pi = __fmul_rn(load<dtype_f32>(t.p, i), t.decay);
        float mi = __fadd_rn(__fmul_rn(t.m[i], t.beta1), __fmul_rn(gi, t.one_minus_beta1));
        float vi = __fadd_rn(__fmul_rn(t.v[i], t.beta2), __fmul_rn(__fmul_rn(gi, t.one_minus_beta2), gi));
        float denominator = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), t.correction2_root), t.eps);
        pi = __fadd_rn(__fmul_rn(__fdiv_rn(mi, denominator), t.negative_step_size), pi);
        store<dtype_f32>(t.p, i, pi);
        t.m[i] = mi;
        t.v[i] = vi;
    }
}
