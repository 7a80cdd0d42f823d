// lora.cu - the LoRA branch of an adapted Linear, y = base + scaling * (dropout(x) A^T) B^T, without the dropped copy of x,
// the [N, out] update or the casts between a 16-bit base and the fp32 adapter that the unfused ops need.
// Shapes (row-major): x [N, in] and base, y, dy [N, out] in the activation dtype (f32, bf16, f16); the adapter in fp32:
// A [r, in], B [out, r], u = dropout(x) A^T [N, r] (saved by forward for backward), du [N, r].
// Dropout is dropout.cu's mask (common.cuh's dropout_bits24 over x's flat index row * in + k, keep iff bits >= threshold,
// kept values times keep_scale = 1 / (1 - p) rounded to fp32 by the host), regenerated wherever x is read: forward and
// backward store no dropped x. threshold 0 and keep_scale 1: no dropout (every element kept, times 1, exact).
//
// Numerics: every product is accumulated in fp32 and rounded once, on store, to the output's dtype. y = round(base +
// round32(scaling * acc)) is the unfused ops' AddUpdate (widen the base, add in fp32, round once); the sums' order is
// not the CPU GEMM's, so results agree with the CPU reference (CpuLora) to fp32 rounding of sums of length in, out
// or N, not bit for bit. The mask is bit for bit the DropoutOp's.
// Tensor cores: over bf16 activations lora_down, lora_up_backward, lora_down_backward and lora_weight_grad run on
// mma.m16n8k16 (lora_mma.cuh: the fp32 operand split into three bf16 parts, 3 mmas a bf16 x fp32 product, 6 for du A's
// fp32 x fp32, fp32 accumulation; its header gives the error bounds), with keep_scale applied to the masked sum, not to
// each element. f32 and f16 stay on the SIMT code (lora_mma.cuh says why); so do lora_up and lora_up_gelu at every
// dtype (2 N out r flops beside 2 N out bytes of base and y: already about bandwidth-bound on SIMT).
//
// Kernels (dtype: the activations', f32, bf16, f16; the adapter and u, du always fp32):
//   lora_down_{dtype}(x, a, u, threshold, keep_scale, seed, rows, in, rank)
//       u[n, j] = sum_k drop(x)[n, k] a[j, k]                                 (written)
//   lora_up_{dtype}(u, b, base, y, scaling, rows, out, rank)
//       y[n, o] = base[n, o] + scaling * sum_j u[n, j] b[o, j]                (written; y may not alias base)
//   lora_up_backward_{dtype}(dy, b, du, scaling, rows, out, rank)
//       du[n, j] = scaling * sum_o dy[n, o] b[o, j]                           (written)
//   lora_up_gelu_{dtype}(u, b, base, y, pre, scaling, rows, out, rank)
//       fc1 with LoRA (LoraLinearGeluOp), the branch added before the activation: h = round(base[n, o] + scaling * sum_j
//       u[n, j] b[o, j]) (the unfused Lora op's y, rounded once), pre[n, o] = h (saved for backward; pre null: not
//       saved), y[n, o] = gelu_new(h) (gelu.cuh's, as gelu.cu's gelu_new computes it from the stored h). base is the
//       base GEMM's h (its bias in cuBLASLt's BIAS epilogue); pre and y may each alias base (LoraLinearGeluKernels
//       writes pre over it; y too at inference), not each other. No gelu_new launch follows.
//   lora_down_backward_{dtype}(du, a, dx, threshold, keep_scale, seed, accumulate, rows, in, rank)
//       dx[n, k] = keep(n, k) ? keep_scale * sum_j du[n, j] a[j, k] : 0      (written), or with accumulate 1 dx[n, k] +=
//       that (read, added in fp32, rounded once): into a gradient already pending for x (BackwardContext.PendingGradient),
//       so neither a temporary nor an add launch; the base Linear's dx product then adds itself with beta 1.
//   lora_weight_grad_{dtype}(left, right, grad, threshold, keep_scale, seed, scaling, accumulate, rows, width, rank,
//                            column_stride, rank_stride)
//       grad[c * column_stride + j * rank_stride] += scaling * sum_n drop(left)[n, c] right[n, j]   (accumulate 1), or =
//       that (accumulate 0: a gradient new this step, BackwardContext.GradientFor, written whole with no zero fill first)
//       left [N, width] in dtype, right [N, rank] fp32. dB: left = dy, right = u, width = out, strides (rank, 1),
//       scaling, no mask. dA: left = x, right = du, width = in, strides (1, in), scaling 1, x's mask.
// Launch (no dynamic shared memory in any). bf16, on tensor cores (lora_mma.cuh), block (256) = 8 warps:
//   lora_down, lora_up_backward: 32 rows and 16 ranks a block, grid ((N + 31) / 32, (r + 15) / 16); the block stages
//       32 rows x 128 columns of x (dy) a step (8.5 KiB static, coalesced 16-byte loads), each warp 16 of the columns,
//       its partial sums added in warp order through 16 KiB of static shared memory. 256 blocks at N 8192, r 16.
//   lora_down_backward: a warp 32 rows x 32 columns of dx (six mmas a 16 x 8 tile and 16 ranks), 8 warps side by side:
//       grid ((N + 31) / 32, (in + 255) / 256); no shared memory, no barrier; each lane loads its du and A fragments
//       (L1/L2). 2560 blocks at N 8192, in 2560.
//   lora_weight_grad: 32 columns and 16 ranks a block, grid ((width + 31) / 32, (r + 15) / 16); the block stages 128 rows
//       x 32 columns of left a step (10 KiB static), each warp 16 of the rows (A = left^T by ldmatrix.trans, B = right's
//       fragments from L1/L2); the 8 warps' sums over their rows are added in warp order through 16 KiB of static
//       shared memory: deterministic, no atomics. Parallelism at Phi-2's shapes (N 8192, r 16): 80 blocks (640 warps)
//       at width 2560 (dB of dense and fc2, dA of dense and fc1), 320 blocks at 10240 (dB of fc1, dA of fc2); the
//       reduction over N stays in the block (a split over N with a second pass would buy more blocks at width 2560 for
//       an [splits, width, r] temporary: not done, modelled bandwidth-bound as it is).
// f32, f16 (SIMT):
//   lora_down, lora_up_backward: a warp a row, 8 rows a block of 256, 16 ranks a block:
//       grid ((N + 7) / 8, (r + 15) / 16), block (256). Lanes stride over the row (coalesced x / dy), each lane keeps
//       16 fp32 sums, a warp_sum each at the end. The weight (A or B, 4 r in or 4 r out bytes) is re-read per row from
//       L1/L2, never from DRAM more than once in the model.
//   lora_up, lora_up_gelu, lora_down_backward: a thread a column, 8 rows a block: grid ((N + 7) / 8, (width + 255) / 256),
//       block (256) (rows in x: N / 8 may pass y's 65535); the 8 rows of u (du) staged in static shared memory 64 ranks at a time (2 KiB), any r.
//   lora_weight_grad: 64 columns x 4 row slices a block, 16 ranks: grid ((width + 63) / 64, (r + 15) / 16),
//       block (256); the 4 slices' sums added in a fixed order through static shared memory (16 KiB), so the result is
//       deterministic (no atomics).
// Why hand-written and not cuBLAS for dB and dA: their left operand is 16-bit (dy, x) and the right fp32 (u, du); a
// GEMM needs one input dtype, so cuBLAS would need an fp32 copy of dy [N, out] or of the dropped x [N, in], the
// temporaries this file exists to remove.
// Cost (the launchers declare it; every byte once a direction): lora_down reads x and a, writes u, 2 N in r flops;
// lora_up reads u, b and base, writes y, 2 N out r + 2 N out; lora_up_gelu as lora_up, and writes pre, + 11 N out (gelu_new);
// lora_up_backward reads dy and b, writes du, 2 N out r
// + N r; lora_down_backward reads du and a (and dx when accumulating), writes dx, 2 N in r; lora_weight_grad reads left, right
// (and grad when accumulating), writes grad, 2 N width r + (1 or 2) width r. x and dy are read whole even where dropped
// (the mask is applied after the load). On tensor cores (bf16) the flops are the mmas issued, 4096 each, padding
// included (LoraMmaCost): lora_down and lora_up_backward 3 ceil(N/16) ceil(width/16) ceil(r/8) mmas (96 N width at r
// 16), lora_weight_grad the same over width, lora_down_backward 6 ceil(N/16) ceil(in/8) ceil(r/16) (192 N in at r 16);
// SIMT beside them: the splits (2 flops a value each time a warp splits it), the warps' reduction, the mask and the
// epilogue, 2 to 4 % of the total.
#include "common.cuh"
#include "gelu.cuh"
#include "lora_mma.cuh"

#define LORA_RANKS_PER_BLOCK 16
#define LORA_ROWS_PER_BLOCK 8
#define LORA_STAGED_RANKS 64
#define LORA_GRAD_COLUMNS 64
#define LORA_GRAD_SLICES 4

// out[n, j0 + jj] = out_scale * sum_k drop(x)[n, k] w[(j0 + jj) * w_rank_stride + k * w_width_stride], a warp a row.
template <typename D>
PHI2_DEVICE void lora_row_times_weight(const typename D::type* x, const float* w, float* out, unsigned threshold,
                                       float keep_scale, unsigned long long seed, float out_scale, int rows, int width,
                                       int rank, int w_rank_stride, int w_width_stride)
{
    int lane = (int)(threadIdx.x & 31u);
    int row = (int)blockIdx.x * LORA_ROWS_PER_BLOCK + (int)(threadIdx.x >> 5);
    int j0 = (int)blockIdx.y * LORA_RANKS_PER_BLOCK;
    if (row >= rows) return; // no barrier below: a whole warp leaves together
    int ranks = rank - j0 < LORA_RANKS_PER_BLOCK ? rank - j0 : LORA_RANKS_PER_BLOCK;
    float sums[LORA_RANKS_PER_BLOCK];
    for (int jj = 0; jj < LORA_RANKS_PER_BLOCK; jj++) sums[jj] = 0.0f;
    long long row_start = (long long)row * width;
    for (int k = lane; k < width; k += 32)
    {
        float v = load<D>(x, row_start + k);
        v = dropout_bits24(seed, row_start + k) >= threshold ? __fmul_rn(v, keep_scale) : 0.0f;
        const float* wk = w + (long long)k * w_width_stride + (long long)j0 * w_rank_stride;
        for (int jj = 0; jj < LORA_RANKS_PER_BLOCK; jj++)
            if (jj < ranks) sums[jj] += v * wk[(long long)jj * w_rank_stride];
    }
    for (int jj = 0; jj < LORA_RANKS_PER_BLOCK; jj++)
    {
        float total = warp_sum(sums[jj]);
        if (lane == 0 && jj < ranks) out[(long long)row * rank + j0 + jj] = total * out_scale;
    }
}

// What lora_rank_expand does with its column's sums (a compile-time mode).
#define LORA_EXPAND_UP 0            // y = base + scaling * sum
#define LORA_EXPAND_UP_GELU 1       // pre = round(base + scaling * sum), y = gelu_new(pre)
#define LORA_EXPAND_DOWN_BACKWARD 2 // dx = keep ? keep_scale * sum : 0, or dx += that (accumulate)

// For 8 rows n of the block and the thread's column c: sum_j r[n, j] w[j * w_rank_stride + c * w_width_stride], with
// r's rows staged in shared memory; then what MODE says.
template <typename D, int MODE>
PHI2_DEVICE void lora_rank_expand(const float* r, const float* w, const typename D::type* base, typename D::type* out,
                                  typename D::type* pre, float scaling, unsigned threshold, float keep_scale,
                                  unsigned long long seed, int accumulate, int rows, int width, int rank, int w_rank_stride,
                                  int w_width_stride)
{
    __shared__ float staged[LORA_ROWS_PER_BLOCK][LORA_STAGED_RANKS];
    int c = (int)(blockIdx.y * blockDim.x + threadIdx.x);
    int row0 = (int)blockIdx.x * LORA_ROWS_PER_BLOCK;
    float sums[LORA_ROWS_PER_BLOCK];
    for (int i = 0; i < LORA_ROWS_PER_BLOCK; i++) sums[i] = 0.0f;
    for (int j0 = 0; j0 < rank; j0 += LORA_STAGED_RANKS)
    {
        int ranks = rank - j0 < LORA_STAGED_RANKS ? rank - j0 : LORA_STAGED_RANKS;
        __syncthreads(); // the previous chunk's reads are done
        for (int t = (int)threadIdx.x; t < LORA_ROWS_PER_BLOCK * LORA_STAGED_RANKS; t += (int)blockDim.x)
        {
            int i = t / LORA_STAGED_RANKS, jj = t % LORA_STAGED_RANKS;
            staged[i][jj] = row0 + i < rows && jj < ranks ? r[(long long)(row0 + i) * rank + j0 + jj] : 0.0f;
        }
        __syncthreads();
        if (c < width)
        {
            const float* wc = w + (long long)c * w_width_stride + (long long)j0 * w_rank_stride;
            for (int jj = 0; jj < ranks; jj++)
            {
                float wv = wc[(long long)jj * w_rank_stride];
                for (int i = 0; i < LORA_ROWS_PER_BLOCK; i++) sums[i] += staged[i][jj] * wv;
            }
        }
    }
    if (c >= width) return;
    for (int i = 0; i < LORA_ROWS_PER_BLOCK && row0 + i < rows; i++)
    {
        long long index = (long long)(row0 + i) * width + c;
        if (MODE == LORA_EXPAND_UP) store<D>(out, index, __fadd_rn(load<D>(base, index), __fmul_rn(sums[i], scaling)));
        else if (MODE == LORA_EXPAND_UP_GELU)
        {
            // Rounded to the dtype before the activation, as an unfused Lora op stores it and GeluNew reads it.
            typename D::type h = D::from_f32(__fadd_rn(load<D>(base, index), __fmul_rn(sums[i], scaling)));
            if (pre) pre[index] = h;
            store<D>(out, index, gelu_new_f(D::to_f32(h)));
        }
        else
        {
            float v = dropout_bits24(seed, index) >= threshold ? __fmul_rn(sums[i], keep_scale) : 0.0f;
            store<D>(out, index, accumulate ? __fadd_rn(load<D>(out, index), v) : v);
        }
    }
}

// grad[c * column_stride + j * rank_stride] += scaling * sum_n drop(left)[n, c] right[n, j]: 64 columns, 4 row slices.
template <typename D>
PHI2_DEVICE void lora_weight_grad(const typename D::type* left, const float* right, float* grad, unsigned threshold,
                                  float keep_scale, unsigned long long seed, float scaling, int accumulate, int rows, int width,
                                  int rank, int column_stride, int rank_stride)
{
    __shared__ float partial[LORA_GRAD_SLICES][LORA_RANKS_PER_BLOCK][LORA_GRAD_COLUMNS];
    int column = (int)(threadIdx.x % LORA_GRAD_COLUMNS), slice = (int)(threadIdx.x / LORA_GRAD_COLUMNS);
    int c = (int)blockIdx.x * LORA_GRAD_COLUMNS + column;
    int j0 = (int)blockIdx.y * LORA_RANKS_PER_BLOCK;
    int ranks = rank - j0 < LORA_RANKS_PER_BLOCK ? rank - j0 : LORA_RANKS_PER_BLOCK;
    float sums[LORA_RANKS_PER_BLOCK];
    for (int jj = 0; jj < LORA_RANKS_PER_BLOCK; jj++) sums[jj] = 0.0f;
    if (c < width)
        for (int n = slice; n < rows; n += LORA_GRAD_SLICES)
        {
            long long index = (long long)n * width + c;
            float v = load<D>(left, index);
            v = dropout_bits24(seed, index) >= threshold ? __fmul_rn(v, keep_scale) : 0.0f;
            const float* rn = right + (long long)n * rank + j0;
            for (int jj = 0; jj < LORA_RANKS_PER_BLOCK; jj++)
                if (jj < ranks) sums[jj] += v * rn[jj];
        }
    for (int jj = 0; jj < LORA_RANKS_PER_BLOCK; jj++) partial[slice][jj][column] = sums[jj];
    __syncthreads();
    if (slice != 0 || c >= width) return;
    for (int jj = 0; jj < ranks; jj++)
    {
        float total = ((partial[0][jj][column] + partial[1][jj][column]) + partial[2][jj][column]) + partial[3][jj][column];
        long long at = (long long)c * column_stride + (long long)(j0 + jj) * rank_stride;
        float v = __fmul_rn(total, scaling);
        grad[at] = accumulate ? __fadd_rn(grad[at], v) : v;
    }
}

// lora_down_backward over bf16 dx on tensor cores: warp w of block (bx, by) owns rows [32 bx, +32) and columns
// [256 by + 32 w, +32) of dx; lora_mma_expand's six-term du A, then the mask, keep_scale and the store (or add).
PHI2_DEVICE void lora_mma_down_backward(const float* du, const float* a, bf16_t* dx, unsigned threshold, float keep_scale,
                                        unsigned long long seed, int accumulate, int rows, int in, int rank)
{
    int warp = (int)(threadIdx.x >> 5), lane = (int)(threadIdx.x & 31u), g = lane >> 2, t = lane & 3;
    int row0 = (int)blockIdx.x * LORA_MMA_EXPAND_ROWS;
    int col0 = (int)blockIdx.y * LORA_MMA_WARPS * LORA_MMA_EXPAND_COLUMNS + warp * LORA_MMA_EXPAND_COLUMNS;
    if (col0 >= in) return; // the whole warp; no barrier in this kernel
    float acc[2][4][4];
    #pragma unroll
    for (int mt = 0; mt < 2; mt++)
        #pragma unroll
        for (int nt = 0; nt < 4; nt++)
            #pragma unroll
            for (int i = 0; i < 4; i++) acc[mt][nt][i] = 0.0f;
    lora_mma_expand<4>(du, rank, a, in, 1, rows, in, rank, row0, col0, acc);
    #pragma unroll
    for (int mt = 0; mt < 2; mt++)
        #pragma unroll
        for (int nt = 0; nt < 4; nt++)
            #pragma unroll
            for (int i = 0; i < 4; i++)
            {
                int n = row0 + 16 * mt + g + (i >= 2 ? 8 : 0), k = col0 + 8 * nt + 2 * t + (i & 1);
                if (n >= rows || k >= in) continue;
                long long index = (long long)n * in + k;
                float v = dropout_bits24(seed, index) >= threshold ? __fmul_rn(acc[mt][nt][i], keep_scale) : 0.0f;
                store<dtype_bf16>(dx, index, accumulate ? __fadd_rn(load<dtype_bf16>(dx, index), v) : v);
            }
}

PHI2_KERNEL void lora_down_f32(const float* x, const float* a, float* u, unsigned threshold, float keep_scale,
                             unsigned long long seed, int rows, int in, int rank)
{
    lora_row_times_weight<dtype_f32>(x, a, u, threshold, keep_scale, seed, 1.0f, rows, in, rank, in, 1);
}
PHI2_KERNEL void lora_up_f32(const float* u, const float* b, const float* base, float* y, float scaling, int rows, int out, int rank)
{
    lora_rank_expand<dtype_f32, LORA_EXPAND_UP>(u, b, base, y, nullptr, scaling, 0u, 1.0f, 0ull, 0, rows, out, rank, 1, rank);
}
PHI2_KERNEL void lora_up_gelu_f32(const float* u, const float* b, const float* base, float* y, float* pre, float scaling, int rows, int out,
                                int rank)
{
    lora_rank_expand<dtype_f32, LORA_EXPAND_UP_GELU>(u, b, base, y, pre, scaling, 0u, 1.0f, 0ull, 0, rows, out, rank, 1, rank);
}
PHI2_KERNEL void lora_up_backward_f32(const float* dy, const float* b, float* du, float scaling, int rows, int out, int rank)
{
    lora_row_times_weight<dtype_f32>(dy, b, du, 0u, 1.0f, 0ull, scaling, rows, out, rank, 1, rank);
}
PHI2_KERNEL void lora_down_backward_f32(const float* du, const float* a, float* dx, unsigned threshold, float keep_scale,
                                      unsigned long long seed, int accumulate, int rows, int in, int rank)
{
    lora_rank_expand<dtype_f32, LORA_EXPAND_DOWN_BACKWARD>(du, a, nullptr, dx, nullptr, 1.0f, threshold, keep_scale, seed, accumulate,
                                                          rows, in, rank, in, 1);
}
PHI2_KERNEL void lora_weight_grad_f32(const float* left, const float* right, float* grad, unsigned threshold, float keep_scale,
                                    unsigned long long seed, float scaling, int accumulate, int rows, int width, int rank,
                                    int column_stride, int rank_stride)
{
    lora_weight_grad<dtype_f32>(left, right, grad, threshold, keep_scale, seed, scaling, accumulate, rows, width, rank, column_stride,
                               rank_stride);
}

PHI2_KERNEL void lora_down_bf16(const bf16_t* x, const float* a, float* u, unsigned threshold, float keep_scale,
                             unsigned long long seed, int rows, int in, int rank)
{
    lora_mma_row_times_weight(x, in, in, a, in, 1, u, rank, threshold, keep_scale, seed, 1.0f, rows, in, rank,
                              (int)blockIdx.x * LORA_MMA_DOWN_ROWS, (int)blockIdx.y * LORA_MMA_RANKS);
}
PHI2_KERNEL void lora_up_bf16(const float* u, const float* b, const bf16_t* base, bf16_t* y, float scaling, int rows, int out, int rank)
{
    lora_rank_expand<dtype_bf16, LORA_EXPAND_UP>(u, b, base, y, nullptr, scaling, 0u, 1.0f, 0ull, 0, rows, out, rank, 1, rank);
}
PHI2_KERNEL void lora_up_gelu_bf16(const float* u, const float* b, const bf16_t* base, bf16_t* y, bf16_t* pre, float scaling, int rows, int out,
                                int rank)
{
    lora_rank_expand<dtype_bf16, LORA_EXPAND_UP_GELU>(u, b, base, y, pre, scaling, 0u, 1.0f, 0ull, 0, rows, out, rank, 1, rank);
}
PHI2_KERNEL void lora_up_backward_bf16(const bf16_t* dy, const float* b, float* du, float scaling, int rows, int out, int rank)
{
    lora_mma_row_times_weight(dy, out, out, b, 1, rank, du, rank, 0u, 1.0f, 0ull, scaling, rows, out, rank,
                              (int)blockIdx.x * LORA_MMA_DOWN_ROWS, (int)blockIdx.y * LORA_MMA_RANKS);
}
PHI2_KERNEL void lora_down_backward_bf16(const float* du, const float* a, bf16_t* dx, unsigned threshold, float keep_scale,
                                      unsigned long long seed, int accumulate, int rows, int in, int rank)
{
    lora_mma_down_backward(du, a, dx, threshold, keep_scale, seed, accumulate, rows, in, rank);
}
PHI2_KERNEL void lora_weight_grad_bf16(const bf16_t* left, const float* right, float* grad, unsigned threshold, float keep_scale,
                                    unsigned long long seed, float scaling, int accumulate, int rows, int width, int rank,
                                    int column_stride, int rank_stride)
{
    lora_mma_weight_grad(left, width, width, right, rank, grad, column_stride, rank_stride, threshold, keep_scale, seed, scaling,
                         accumulate, rows, width, rank, (int)blockIdx.y * LORA_MMA_RANKS);
}

PHI2_KERNEL void lora_down_f16(const f16_t* x, const float* a, float* u, unsigned threshold, float keep_scale,
                             unsigned long long seed, int rows, int in, int rank)
{
    lora_row_times_weight<dtype_f16>(x, a, u, threshold, keep_scale, seed, 1.0f, rows, in, rank, in, 1);
}
PHI2_KERNEL void lora_up_f16(const float* u, const float* b, const f16_t* base, f16_t* y, float scaling, int rows, int out, int rank)
{
    lora_rank_expand<dtype_f16, LORA_EXPAND_UP>(u, b, base, y, nullptr, scaling, 0u, 1.0f, 0ull, 0, rows, out, rank, 1, rank);
}
PHI2_KERNEL void lora_up_gelu_f16(const float* u, const float* b, const f16_t* base, f16_t* y, f16_t* pre, float scaling, int rows, int out,
                                int rank)
{
    lora_rank_expand<dtype_f16, LORA_EXPAND_UP_GELU>(u, b, base, y, pre, scaling, 0u, 1.0f, 0ull, 0, rows, out, rank, 1, rank);
}
PHI2_KERNEL void lora_up_backward_f16(const f16_t* dy, const float* b, float* du, float scaling, int rows, int out, int rank)
{
    lora_row_times_weight<dtype_f16>(dy, b, du, 0u, 1.0f, 0ull, scaling, rows, out, rank, 1, rank);
}
PHI2_KERNEL void lora_down_backward_f16(const float* du, const float* a, f16_t* dx, unsigned threshold, float keep_scale,
                                      unsigned long long seed, int accumulate, int rows, int in, int rank)
{
    lora_rank_expand<dtype_f16, LORA_EXPAND_DOWN_BACKWARD>(du, a, nullptr, dx, nullptr, 1.0f, threshold, keep_scale, seed, accumulate,
                                                          rows, in, rank, in, 1);
}
PHI2_KERNEL void lora_weight_grad_f16(const f16_t* left, const float* right, float* grad, unsigned threshold, float keep_scale,
                                    unsigned long long seed, float scaling, int accumulate, int rows, int width, int rank,
                                    int column_stride, int rank_stride)
{
    lora_weight_grad<dtype_f16>(left, right, grad, threshold, keep_scale, seed, scaling, accumulate, rows, width, rank, column_stride,
                               rank_stride);
}
