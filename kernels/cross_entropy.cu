// cross_entropy.cu - fused softmax cross-entropy over the vocabulary (the LM loss), with an ignore index for
// masked positions, as the CPU backend (src/Phi2Native.Backends/Ops/Loss/CpuCrossEntropy.cs; CrossEntropyOp). logits and dLogits are of the dtype; targets are I32; lse, loss and the sums are fp32;
// all math is fp32 (the total in double, as the CPU's).
//
// Kernels (dtype: f32, bf16):
//   cross_entropy_{dtype}(logits, targets, lse, loss, rows, V, ignore_index)
//       lse[r] = log sum_v exp(logits[r, v]) for every row, ignored ones included (the max is subtracted before
//       exp, so logits of 1e4 do not overflow); loss[r] = lse[r] - logits[r, targets[r]] on counted rows, 0 on
//       rows whose target is ignore_index. loss may be null (not needed).
//       grid (rows; fewer works, each block then walks rows blockIdx.x, + gridDim.x, ...), block (a multiple of 32,
//       at most 1024: the launcher takes V rounded up to 32, at most 256), no dynamic shared memory.
//       Saves lse [rows] for backward, which also needs logits and targets; the [rows, V] probabilities are never
//       stored.
//   cross_entropy_sum_{dtype}(logits, targets, lse, rows, V, ignore_index, loss_sum, loss_mean, counted)
//       The CPU backend's total: loss_sum = (float) of the double sum, in row order, of (double)lse[r] -
//       (double)logits[r, targets[r]] over counted rows; counted = how many rows were counted;
//       loss_mean = loss_sum * (float)(1.0 / counted) in fp32 (CrossEntropyOp's mean: ScaleInPlace(1 / counted)),
//       or loss_sum (0) when no row counts. loss_mean may be null. Given the same lse, the result equals the
//       CPU's bit for bit: the block loads a tile of terms in parallel, then thread 0 adds them in row order.
//       grid (1), block (a multiple of 32, at most 1024: the launcher takes 256), no dynamic shared memory
//       (static: 12 bytes per thread of the largest block). rows may be 0 (loss_sum = loss_mean = 0, counted = 0).
//   cross_entropy_backward_{dtype}(logits, targets, lse, counted, dloss, dlogits, rows, V, ignore_index)
//       The gradient of the mean loss times dloss, read on the device (no host wait for either): with
//       scale = (float)(1.0 / counted) * dloss[0] in fp32 (dloss null: 1; counted 0: every row is ignored),
//       dlogits[r, v] = scale * exp(logits[r, v] - lse[r]) - (v == targets[r] ? scale : 0) on counted rows, in the
//       CPU's order (subtract, exp, multiply by scale, then subtract scale at the target), 0 on ignored rows:
//       written (=), as activation gradients are.
//       grid and block as forward, no dynamic shared memory. dlogits may alias logits (same buffer, same dtype):
//       every element is read, then written, by the same thread.
//   cross_entropy_chunk_{dtype}(logits, targets, lse, picked, counted, rows, V, ignore_index)
//       One chunk of rows of the fused lm_head + loss (LinearCrossEntropyOp): forward and backward of the mean loss in
//       one pass, the [rows, V] logits overwritten in place by their gradient. lse[r] as cross_entropy (the same
//       code, the same block: bit for bit); picked[r] = logits[r, targets[r]] as read before the overwrite (0 on
//       ignored rows, NaN for a target out of range); then logits[r, v] = cross_entropy_backward's dlogits with
//       dloss null and counted given by value (the host knows it: the loss's targets are its own), 0 on ignored
//       rows. counted is the count of the whole loss, not of the chunk, so a chunk with no counted row still scales
//       by it (and writes zeros). grid and block as cross_entropy, no dynamic shared memory. Reads and writes each
//       logit once more than cross_entropy: rows x V x (2 reads + 1 write) elements, ~8 flops a logit.
//   cross_entropy_picked_sum(picked, targets, lse, rows, V, ignore_index, loss_sum, loss_mean, counted)
//       cross_entropy_sum over the gathered target logits (picked [rows] fp32, from cross_entropy_chunk) instead
//       of logits [rows, V]: the same terms in the same order, so the same bits as cross_entropy_sum given the
//       same lse. V only bounds the targets. Launch as cross_entropy_sum.
//
// Forward reads each row once ("online softmax"): thread t folds its columns c = t, t + blockDim.x, ... into a
// running maximum m_t and a sum s_t of exp(x - m_t), rescaling s_t by exp(m_old - m_new) when the maximum grows
// (one exp per element either way); then the block takes M = max over t of m_t (block_max) and
// S = sum over t of s_t * exp(m_t - M) (block_sum), and lse = M + log(S). -Inf logits (a masked vocabulary entry)
// contribute 0; a NaN or +Inf logit makes the row's lse NaN, and so does a row of only -Inf, as on the CPU.
//
// A target that is neither ignore_index nor in [0, V) (the CPU backend throws for it; a kernel cannot) makes the
// row's loss, its term of the sum and its gradient row NaN, instead of reading out of bounds.
#include "common.cuh"

// A quiet NaN, for rows whose target is out of range.
PHI2_DEVICE float cross_entropy_nan() { return __uint_as_float(0x7fc00000u); }

// The row's log-sum-exp, returned to every thread of the block (one online pass; see the header). Called by every
// thread: it holds block_max's and block_sum's barriers.
template <typename D>
PHI2_DEVICE float cross_entropy_row_lse(const typename D::type* row, int V, float* scratch)
{
    const float negative_infinity = __uint_as_float(0xff800000u);
    float m = negative_infinity, s = 0.0f;
    for (int c = (int)threadIdx.x; c < V; c += (int)blockDim.x)
    {
        float x = load<D>(row, c);
        if (x > m)
        {
            s = s * expf(m - x) + 1.0f;
            m = x;
        }
        else if (!(x == negative_infinity && m == negative_infinity))
        {
            s += expf(x - m); // x = -Inf adds 0; a NaN x (never > m) makes s NaN; so does x = m = +Inf
        }
    }
    float row_max = block_max(m, scratch);
    // A thread that saw no column (V < blockDim.x) has s = 0 and m = -Inf: it adds 0 unless the row's max is
    // -Inf too, and then the row is all -Inf and NaN is the CPU's answer as well.
    float sum = block_sum(s * expf(m - row_max), scratch);
    return row_max + logf(sum);
}

template <typename D>
PHI2_DEVICE void cross_entropy(const typename D::type* logits, const int* targets, float* lse, float* loss, int rows,
                               int V, int ignore_index)
{
    __shared__ float scratch[32];
    for (int r = (int)blockIdx.x; r < rows; r += (int)gridDim.x)
    {
        const typename D::type* row = logits + (long long)r * V;
        float l = cross_entropy_row_lse<D>(row, V, scratch);
        if (threadIdx.x == 0)
        {
            lse[r] = l;
            if (loss)
            {
                int t = targets[r];
                float value = 0.0f;
                if (t != ignore_index) value = (t >= 0 && t < V) ? l - load<D>(row, t) : cross_entropy_nan();
                loss[r] = value;
            }
        }
    }
}

// picked: the target's logit of row r is logits[r] (gathered by cross_entropy_chunk) rather than logits[r * V + t].
template <typename D, bool picked>
PHI2_DEVICE void cross_entropy_total(const typename D::type* logits, const int* targets, const float* lse, int rows, int V,
                                     int ignore_index, float* loss_sum, float* loss_mean, int* counted)
{
    __shared__ double terms[1024];
    __shared__ int used[1024];
    double sum = 0.0; // thread 0's
    int count = 0;
    for (int base = 0; base < rows; base += (int)blockDim.x)
    {
        int r = base + (int)threadIdx.x;
        double term = 0.0;
        int counts = 0;
        if (r < rows)
        {
            int t = targets[r];
            if (t != ignore_index)
            {
                counts = 1;
                term = (t >= 0 && t < V) ? (double)lse[r] - (double)load<D>(logits, picked ? (long long)r : (long long)r * V + t)
                                         : (double)cross_entropy_nan();
            }
        }
        terms[threadIdx.x] = term;
        used[threadIdx.x] = counts;
        __syncthreads();
        if (threadIdx.x == 0)
        {
            int n = rows - base < (int)blockDim.x ? rows - base : (int)blockDim.x;
            for (int i = 0; i < n; i++)
                if (used[i])
                {
                    sum += terms[i];
                    count++;
                }
        }
        __syncthreads(); // the next tile overwrites terms
    }
    if (threadIdx.x == 0)
    {
        float total = (float)sum;
        *loss_sum = total;
        *counted = count;
        if (loss_mean) *loss_mean = count > 0 ? __fmul_rn(total, (float)(1.0 / (double)count)) : total;
    }
}

template <typename D>
PHI2_DEVICE void cross_entropy_chunk(typename D::type* logits, const int* targets, float* lse, float* picked, int counted,
                                     int rows, int V, int ignore_index)
{
    __shared__ float scratch[32];
    float scale = counted > 0 ? (float)(1.0 / (double)counted) : 0.0f;
    for (int r = (int)blockIdx.x; r < rows; r += (int)gridDim.x)
    {
        typename D::type* row = logits + (long long)r * V;
        float l = cross_entropy_row_lse<D>(row, V, scratch);
        int t = targets[r];
        bool ignored = t == ignore_index, valid = t >= 0 && t < V;
        if (threadIdx.x == 0)
        {
            lse[r] = l;
            picked[r] = ignored ? 0.0f : valid ? load<D>(row, t) : cross_entropy_nan();
        }
        // Every thread has read its columns (inside block_sum) and thread 0 the target's logit before any store below
        // can reach them: the barrier orders thread 0's read before another thread's store of column t.
        __syncthreads();
        for (int c = (int)threadIdx.x; c < V; c += (int)blockDim.x)
        {
            if (ignored)
            {
                store<D>(row, c, 0.0f);
                continue;
            }
            // cross_entropy_backward's roundings with dloss = 1: exp(x - lse) * scale, minus scale at the target.
            float d = __fmul_rn(expf(__fsub_rn(load<D>(row, c), l)), scale);
            if (c == t) d = __fsub_rn(d, scale);
            store<D>(row, c, valid ? d : cross_entropy_nan());
        }
    }
}

template <typename D>
PHI2_DEVICE void cross_entropy_backward(const typename D::type* logits, const int* targets, const float* lse, const int* counted,
                                        const float* dloss, typename D::type* dlogits, int rows, int V, int ignore_index)
{
    int count = *counted;
    float scale = count > 0 ? __fmul_rn((float)(1.0 / (double)count), dloss ? *dloss : 1.0f) : 0.0f;
    for (int r = (int)blockIdx.x; r < rows; r += (int)gridDim.x)
    {
        const typename D::type* row = logits + (long long)r * V;
        typename D::type* drow = dlogits + (long long)r * V;
        int t = targets[r];
        if (t == ignore_index)
        {
            for (int c = (int)threadIdx.x; c < V; c += (int)blockDim.x) store<D>(drow, c, 0.0f);
            continue;
        }
        bool valid = t >= 0 && t < V;
        float l = lse[r];
        for (int c = (int)threadIdx.x; c < V; c += (int)blockDim.x)
        {
            // The CPU's roundings, one by one (the _rn forms keep the compiler from fusing them into an FMA).
            float d = __fmul_rn(expf(__fsub_rn(load<D>(row, c), l)), scale);
            if (c == t) d = __fsub_rn(d, scale);
            store<D>(drow, c, valid ? d : cross_entropy_nan());
        }
    }
}

PHI2_KERNEL void cross_entropy_f32(const float* logits, const int* targets, float* lse, float* loss, int rows, int V, int ignore_index)
{
    cross_entropy<dtype_f32>(logits, targets, lse, loss, rows, V, ignore_index);
}

PHI2_KERNEL void cross_entropy_bf16(const bf16_t* logits, const int* targets, float* lse, float* loss, int rows, int V, int ignore_index)
{
    cross_entropy<dtype_bf16>(logits, targets, lse, loss, rows, V, ignore_index);
}

PHI2_KERNEL void cross_entropy_sum_f32(const float* logits, const int* targets, const float* lse, int rows, int V, int ignore_index,
                                       float* loss_sum, float* loss_mean, int* counted)
{
    cross_entropy_total<dtype_f32, false>(logits, targets, lse, rows, V, ignore_index, loss_sum, loss_mean, counted);
}

PHI2_KERNEL void cross_entropy_sum_bf16(const bf16_t* logits, const int* targets, const float* lse, int rows, int V, int ignore_index,
                                        float* loss_sum, float* loss_mean, int* counted)
{
    cross_entropy_total<dtype_bf16, false>(logits, targets, lse, rows, V, ignore_index, loss_sum, loss_mean, counted);
}

PHI2_KERNEL void cross_entropy_backward_f32(const float* logits, const int* targets, const float* lse, const int* counted,
                                            const float* dloss, float* dlogits, int rows, int V, int ignore_index)
{
    cross_entropy_backward<dtype_f32>(logits, targets, lse, counted, dloss, dlogits, rows, V, ignore_index);
}

PHI2_KERNEL void cross_entropy_backward_bf16(const bf16_t* logits, const int* targets, const float* lse, const int* counted,
                                             const float* dloss, bf16_t* dlogits, int rows, int V, int ignore_index)
{
    cross_entropy_backward<dtype_bf16>(logits, targets, lse, counted, dloss, dlogits, rows, V, ignore_index);
}

PHI2_KERNEL void cross_entropy_chunk_f32(float* logits, const int* targets, float* lse, float* picked, int counted, int rows, int V,
                                         int ignore_index)
{
    cross_entropy_chunk<dtype_f32>(logits, targets, lse, picked, counted, rows, V, ignore_index);
}

PHI2_KERNEL void cross_entropy_chunk_bf16(bf16_t* logits, const int* targets, float* lse, float* picked, int counted, int rows, int V,
                                          int ignore_index)
{
    cross_entropy_chunk<dtype_bf16>(logits, targets, lse, picked, counted, rows, V, ignore_index);
}

PHI2_KERNEL void cross_entropy_picked_sum(const float* picked, const int* targets, const float* lse, int rows, int V, int ignore_index,
                                          float* loss_sum, float* loss_mean, int* counted)
{
    cross_entropy_total<dtype_f32, true>(picked, targets, lse, rows, V, ignore_index, loss_sum, loss_mean, counted);
}
