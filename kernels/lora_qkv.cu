// lora_qkv.cu - the LoRA branches of q_proj, k_proj and v_proj over one fused projection (LoraQkvOp): x [N, C] and the base
// output [N, 3 C] with q, k, v in column blocks [0, C), [C, 2 C), [2 C, 3 C) (the fused QKV GEMM's), and up to three
// adapters, each present or absent: A_m [r_m, C], B_m [C, r_m] fp32, scaling_m, its own dropout (p_m, seed_m: PEFT has a
// dropout module per adapted Linear, so one mask per module, each over x's flat index n C + k, dropout.cu's).
// y [N, 3 C] = base + scaling_m dropout_m(x) A_m^T B_m^T in module m's column block (base as is where m is absent), the
// sum in fp32 rounded once; u [N, R] fp32, R = r_q + r_k + r_v, module m's columns at offset_m = the ranks before it
// (saved by forward), du likewise. The arithmetic of each module is lora.cu's (the same products; bf16's on tensor cores,
// lora_mma.cuh, all but lora_qkv_up), so the CPU reference is LoraOp's per module (CpuLoraQkv); results agree with it
// to fp32 rounding of sums, the masks bit for bit. Absent modules: rank 0 and null pointers; their blocks return at once.
// bf16 launches (tensor cores, block 256, static shared memory only): down grid ((N + 31) / 32, (max r_m + 15) / 16), x
// staged once for the three modules, each warp's A fragments masked per module in registers; up_backward as lora.cu's
// per module, grid ((N + 31) / 32, (max r_m + 15) / 16, 3); down_backward a warp 32 rows x 16 columns, grid ((N + 31) /
// 32, (C + 127) / 128), each module's six-term product masked and added in q, k, v order; weight_grad below.
//
// Kernels (dtype: x's, base's, y's, dy's, dx's: f32, bf16, f16; adapters, u, du fp32). Per-module arguments come as
// _q, _k, _v triples (rank, threshold and keep_scale of the mask as DropoutKernels.Mask gives them, seed, scaling).
//   lora_qkv_down_{dtype}(x, a_q, a_k, a_v, u, ranks, thresholds, keep_scales, seeds, rows, channels)
//       u[n, offset_m + j] = sum_k drop_m(x)[n, k] a_m[j, k], every present module          (written)
//       f32, f16: grid ((N + 7) / 8), block (256), dynamic shared memory 8 C sizeof(dtype) (x's 8 rows as stored: 80
//       KiB f32 at C 2560): x is read from DRAM once for all three modules; a warp a row then runs each module's
//       ranks 16 at a time over the staged row, regenerating that module's mask.
//   lora_qkv_up_{dtype}(u, b_q, b_k, b_v, base, y, ranks, scalings, rows, channels)
//       y[n, m C + c] = base[n, m C + c] + scaling_m sum_j u[n, offset_m + j] b_m[c, j]     (written; y may not alias base)
//       Grid ((N + 7) / 8, (C + 255) / 256, 3): blockIdx.z is the module; block (256); u's 8 rows staged 64 ranks at a
//       time (2 KiB static), as lora_up.
//   lora_qkv_up_backward_{dtype}(dy, b_q, b_k, b_v, du, ranks, scalings, rows, channels)
//       du[n, offset_m + j] = scaling_m sum_c dy[n, m C + c] b_m[c, j]                       (written)
//       Grid ((N + 7) / 8, (max r_m + 15) / 16, 3), block (256): a warp a row, 16 ranks a block, as lora_up_backward.
//   lora_qkv_weight_grad_{dtype}(left, right, grad_q, grad_k, grad_v, ranks, thresholds, keep_scales, seeds, scalings,
//                                of_a, accumulate, rows, channels)
//       of_a 0 (dB): grad_m[c, j] += scaling_m sum_n dy[n, m C + c] u[n, offset_m + j]       (left dy, no mask)
//       of_a 1 (dA): grad_m[j, c] += sum_n drop_m(x)[n, c] du[n, offset_m + j]               (left x, scalings 1)
//       += where bit m of accumulate is set, = (written whole, no zero fill first: a gradient new this step) where not.
//       A null grad_m skips module m (its gradient not needed; its rank still places u's columns).
//       f32, f16: grid ((C + 63) / 64, (max r_m + 15) / 16, 3), block (256): lora_weight_grad's 64 columns x 4 row
//       slices, summed in a fixed order through 16 KiB of static shared memory (deterministic, no atomics).
//       bf16, on tensor cores: lora_mma.cuh's lora_mma_weight_grad per module (its header: 3 mmas a product, the
//       warps' sums added in warp order, deterministic), grid ((C + 31) / 32, (max r_m + 15) / 16, 3), block (256),
//       26 KiB static shared memory; 80 x 3 blocks at C 2560, r 16.
//   lora_qkv_down_backward_{dtype}(du, a_q, a_k, a_v, dx, ranks, thresholds, keep_scales, seeds, accumulate, rows, channels)
//       dx[n, k] = sum_m keep_m(n, k) ? keep_scale_m sum_j du[n, offset_m + j] a_m[j, k] : 0, the modules added in q, k,
//       v order in fp32; written (=), or added into dx (accumulate 1: a gradient already pending for x, the fused QKV
//       GEMM's dx or another reader's), rounded once on store.
//       Grid ((N + 7) / 8, (C + 255) / 256), block (256): a thread a column, each module's du rows staged in turn.
// Launches: forward 2 for any subset of q, k, v (the three modules' lora_down and lora_up were 6); backward 4 (dB, du, dA,
// dx; they were 12, and 3 adds of the branches' dx). Fewer is not possible without a grid-wide barrier: du needs all of
// dY's column block before dA and dx can use it. dB and du both only read dY and u / B, and could share one launch by
// splitting its grid; that would save one launch (3 us) a layer at the price of a kernel with two block shapes: not done.
// Cost (the launchers declare it): down reads x once and each A, writes u, 2 N C R flops; up reads u, the B's and base,
// writes y, 2 N C R + 2 N C (present modules) flops; up_backward reads dY's present blocks and the B's, writes du;
// weight_grad reads left (present blocks), right (and grad where it accumulates), writes grad, 2 N C r_m flops a module;
// down_backward reads du and the A's (and dx when accumulating), writes dx. bf16's flops are the mmas issued, 4096 each,
// per module 3 ceil(N/16) ceil(C/16) ceil(r_m/8) for down, up_backward and weight_grad, 6 ceil(N/16) ceil(C/8)
// ceil(r_m/16) for down_backward, and the SIMT rest (splits, reductions, masks: LoraMmaCost), the bytes the same.
#include "common.cuh"
#include "lora_qkv_mma.cuh"

#define LORA_QKV_RANKS 16
#define LORA_QKV_ROWS 8
#define LORA_QKV_STAGED_RANKS 64
#define LORA_QKV_GRAD_COLUMNS 64
#define LORA_QKV_GRAD_SLICES 4



// u[n, offset_m + j] = sum_k drop_m(x)[n, k] a_m[j, k] for every present module: x's 8 rows staged once in dynamic shared
// memory (as stored), then a warp a row over every module's ranks, 16 at a time, each module's mask regenerated.
template <typename D>
PHI2_DEVICE void lora_qkv_down(const typename D::type* x, const float* a_q, const float* a_k, const float* a_v, float* u,
                               int rank_q, int rank_k, int rank_v, unsigned threshold_q, unsigned threshold_k,
                               unsigned threshold_v, float keep_q, float keep_k, float keep_v, unsigned long long seed_q,
                               unsigned long long seed_k, unsigned long long seed_v, int rows, int channels)
{
    typedef typename D::type T;
    PHI2_DYNAMIC_SHARED(T, staged);
    int lane = (int)(threadIdx.x & 31u), warp = (int)(threadIdx.x >> 5);
    int row = (int)blockIdx.x * LORA_QKV_ROWS + warp;
    T* mine = staged + (long long)warp * channels;
    long long row_start = (long long)row * channels;
    if (row < rows)
        for (int k = lane; k < channels; k += 32) mine[k] = x[row_start + k];
    __syncthreads();
    if (row >= rows) return; // no barrier below
    int total = rank_q + rank_k + rank_v;
    int offset = 0;
    for (int m = 0; m < 3; m++)
    {
        const float* a = lora_qkv_pick(m, a_q, a_k, a_v);
        int rank = lora_qkv_pick(m, rank_q, rank_k, rank_v);
        unsigned threshold = lora_qkv_pick(m, threshold_q, threshold_k, threshold_v);
        float keep_scale = lora_qkv_pick(m, keep_q, keep_k, keep_v);
        unsigned long long seed = lora_qkv_pick(m, seed_q, seed_k, seed_v);
        for (int j0 = 0; j0 < rank; j0 += LORA_QKV_RANKS)
        {
            int ranks = rank - j0 < LORA_QKV_RANKS ? rank - j0 : LORA_QKV_RANKS;
            float sums[LORA_QKV_RANKS];
            for (int jj = 0; jj < LORA_QKV_RANKS; jj++) sums[jj] = 0.0f;
            for (int k = lane; k < channels; k += 32)
            {
                float v = D::to_f32(mine[k]);
                v = dropout_bits24(seed, row_start + k) >= threshold ? __fmul_rn(v, keep_scale) : 0.0f;
                const float* ak = a + k + (long long)j0 * channels;
                for (int jj = 0; jj < LORA_QKV_RANKS; jj++)
                    if (jj < ranks) sums[jj] += v * ak[(long long)jj * channels];
            }
            for (int jj = 0; jj < LORA_QKV_RANKS; jj++)
            {
                float sum = warp_sum(sums[jj]);
                if (lane == 0 && jj < ranks) u[(long long)row * total + offset + j0 + jj] = sum;
            }
        }
        offset += rank;
    }
}

// y[n, m C + c] = base[n, m C + c] + scaling_m sum_j u[n, offset_m + j] b_m[c, j] for module m = blockIdx.z (base as is
// where m is absent), 8 rows and 256 columns of one module a block, u's rows staged as lora_up stages them.
template <typename D>
PHI2_DEVICE void lora_qkv_up(const float* u, const float* b_q, const float* b_k, const float* b_v, const typename D::type* base,
                             typename D::type* y, int rank_q, int rank_k, int rank_v, float scaling_q, float scaling_k,
                             float scaling_v, int rows, int channels)
{
    __shared__ float staged[LORA_QKV_ROWS][LORA_QKV_STAGED_RANKS];
    int m = (int)blockIdx.z;
    const float* b = lora_qkv_pick(m, b_q, b_k, b_v);
    int rank = lora_qkv_pick(m, rank_q, rank_k, rank_v);
    float scaling = lora_qkv_pick(m, scaling_q, scaling_k, scaling_v);
    int total = rank_q + rank_k + rank_v, offset = (m > 0 ? rank_q : 0) + (m > 1 ? rank_k : 0);
    int c = (int)(blockIdx.y * blockDim.x + threadIdx.x);
    int row0 = (int)blockIdx.x * LORA_QKV_ROWS;
    float sums[LORA_QKV_ROWS];
    for (int i = 0; i < LORA_QKV_ROWS; i++) sums[i] = 0.0f;
    for (int j0 = 0; j0 < rank; j0 += LORA_QKV_STAGED_RANKS) // rank is the block's own: every thread takes the same trips
    {
        int ranks = rank - j0 < LORA_QKV_STAGED_RANKS ? rank - j0 : LORA_QKV_STAGED_RANKS;
        __syncthreads();
        for (int t = (int)threadIdx.x; t < LORA_QKV_ROWS * LORA_QKV_STAGED_RANKS; t += (int)blockDim.x)
        {
            int i = t / LORA_QKV_STAGED_RANKS, jj = t % LORA_QKV_STAGED_RANKS;
            staged[i][jj] = row0 + i < rows && jj < ranks ? u[(long long)(row0 + i) * total + offset + j0 + jj] : 0.0f;
        }
        __syncthreads();
        if (c < channels)
        {
            const float* bc = b + (long long)c * rank + j0;
            for (int jj = 0; jj < ranks; jj++)
            {
                float bv = bc[jj];
                for (int i = 0; i < LORA_QKV_ROWS; i++) sums[i] += staged[i][jj] * bv;
            }
        }
    }
    if (c >= channels) return;
    for (int i = 0; i < LORA_QKV_ROWS && row0 + i < rows; i++)
    {
        long long index = (long long)(row0 + i) * 3 * channels + (long long)m * channels + c;
        if (rank == 0) y[index] = base[index];
        else store<D>(y, index, __fadd_rn(load<D>(base, index), __fmul_rn(sums[i], scaling)));
    }
}

// du[n, offset_m + j] = scaling_m sum_c dy[n, m C + c] b_m[c, j], module m = blockIdx.z: lora_up_backward's warp a row
// over dY's column block.
template <typename D>
PHI2_DEVICE void lora_qkv_up_backward(const typename D::type* dy, const float* b_q, const float* b_k, const float* b_v, float* du,
                                      int rank_q, int rank_k, int rank_v, float scaling_q, float scaling_k, float scaling_v,
                                      int rows, int channels)
{
    int m = (int)blockIdx.z;
    const float* b = lora_qkv_pick(m, b_q, b_k, b_v);
    int rank = lora_qkv_pick(m, rank_q, rank_k, rank_v);
    float scaling = lora_qkv_pick(m, scaling_q, scaling_k, scaling_v);
    int total = rank_q + rank_k + rank_v, offset = (m > 0 ? rank_q : 0) + (m > 1 ? rank_k : 0);
    int lane = (int)(threadIdx.x & 31u);
    int row = (int)blockIdx.x * LORA_QKV_ROWS + (int)(threadIdx.x >> 5);
    int j0 = (int)blockIdx.y * LORA_QKV_RANKS;
    if (row >= rows || j0 >= rank) return; // no barrier below
    int ranks = rank - j0 < LORA_QKV_RANKS ? rank - j0 : LORA_QKV_RANKS;
    float sums[LORA_QKV_RANKS];
    for (int jj = 0; jj < LORA_QKV_RANKS; jj++) sums[jj] = 0.0f;
    long long row_start = (long long)row * 3 * channels + (long long)m * channels;
    for (int c = lane; c < channels; c += 32)
    {
        float v = load<D>(dy, row_start + c);
        const float* bc = b + (long long)c * rank + j0;
        for (int jj = 0; jj < LORA_QKV_RANKS; jj++)
            if (jj < ranks) sums[jj] += v * bc[jj];
    }
    for (int jj = 0; jj < LORA_QKV_RANKS; jj++)
    {
        float sum = warp_sum(sums[jj]);
        if (lane == 0 && jj < ranks) du[(long long)row * total + offset + j0 + jj] = sum * scaling;
    }
}

// Module m = blockIdx.z's weight gradient, lora_weight_grad's 64 columns x 4 row slices:
//   dB (of_a 0): grad_m[c, j] += scaling_m sum_n dy[n, m C + c] u[n, offset_m + j]          (left dy, stride 3 C)
//   dA (of_a 1): grad_m[j, c] += sum_n drop_m(x)[n, c] du[n, offset_m + j]                   (left x, stride C)
template <typename D>
PHI2_DEVICE void lora_qkv_weight_grad(const typename D::type* left, const float* right, float* grad_q, float* grad_k, float* grad_v,
                                      int rank_q, int rank_k, int rank_v, unsigned threshold_q, unsigned threshold_k,
                                      unsigned threshold_v, float keep_q, float keep_k, float keep_v, unsigned long long seed_q,
                                      unsigned long long seed_k, unsigned long long seed_v, float scaling_q, float scaling_k,
                                      float scaling_v, int of_a, int accumulate, int rows, int channels)
{
    __shared__ float partial[LORA_QKV_GRAD_SLICES][LORA_QKV_RANKS][LORA_QKV_GRAD_COLUMNS];
    int m = (int)blockIdx.z;
    float* grad = lora_qkv_pick(m, grad_q, grad_k, grad_v);
    int rank = lora_qkv_pick(m, rank_q, rank_k, rank_v);
    unsigned threshold = lora_qkv_pick(m, threshold_q, threshold_k, threshold_v);
    float keep_scale = lora_qkv_pick(m, keep_q, keep_k, keep_v);
    unsigned long long seed = lora_qkv_pick(m, seed_q, seed_k, seed_v);
    float scaling = lora_qkv_pick(m, scaling_q, scaling_k, scaling_v);
    int total = rank_q + rank_k + rank_v, offset = (m > 0 ? rank_q : 0) + (m > 1 ? rank_k : 0);
    int j0 = (int)blockIdx.y * LORA_QKV_RANKS;
    if (grad == nullptr || j0 >= rank) return; // the whole block (a module not needed, or past its rank): before its barrier
    int column = (int)(threadIdx.x % LORA_QKV_GRAD_COLUMNS), slice = (int)(threadIdx.x / LORA_QKV_GRAD_COLUMNS);
    int c = (int)blockIdx.x * LORA_QKV_GRAD_COLUMNS + column;
    int ranks = rank - j0 < LORA_QKV_RANKS ? rank - j0 : LORA_QKV_RANKS;
    long long left_stride = of_a ? channels : 3LL * channels, left_offset = of_a ? 0 : (long long)m * channels;
    float sums[LORA_QKV_RANKS];
    for (int jj = 0; jj < LORA_QKV_RANKS; jj++) sums[jj] = 0.0f;
    if (c < channels)
        for (int n = slice; n < rows; n += LORA_QKV_GRAD_SLICES)
        {
            float v = load<D>(left, (long long)n * left_stride + left_offset + c);
            // The mask is over x's flat index (dB: threshold 0, every element kept, times 1).
            v = dropout_bits24(seed, (long long)n * channels + c) >= threshold ? __fmul_rn(v, keep_scale) : 0.0f;
            const float* rn = right + (long long)n * total + offset + j0;
            for (int jj = 0; jj < LORA_QKV_RANKS; jj++)
                if (jj < ranks) sums[jj] += v * rn[jj];
        }
    for (int jj = 0; jj < LORA_QKV_RANKS; jj++) partial[slice][jj][column] = sums[jj];
    __syncthreads();
    if (slice != 0 || c >= channels) return;
    for (int jj = 0; jj < ranks; jj++)
    {
        float sum = ((partial[0][jj][column] + partial[1][jj][column]) + partial[2][jj][column]) + partial[3][jj][column];
        long long at = of_a ? (long long)(j0 + jj) * channels + c : (long long)c * rank + j0 + jj;
        float v = __fmul_rn(sum, scaling);
        grad[at] = (accumulate >> m) & 1 ? __fadd_rn(grad[at], v) : v;
    }
}

// dx[n, k] (+)= sum_m keep_m(n, k) keep_scale_m sum_j du[n, offset_m + j] a_m[j, k]: 8 rows and 256 columns of x a block,
// every module's du rows staged in turn, each module's masked sum added in q, k, v order, rounded once on store.
template <typename D>
PHI2_DEVICE void lora_qkv_down_backward(const float* du, const float* a_q, const float* a_k, const float* a_v, typename D::type* dx,
                                        int rank_q, int rank_k, int rank_v, unsigned threshold_q, unsigned threshold_k,
                                        unsigned threshold_v, float keep_q, float keep_k, float keep_v, unsigned long long seed_q,
                                        unsigned long long seed_k, unsigned long long seed_v, int accumulate, int rows,
                                        int channels)
{
    __shared__ float staged[LORA_QKV_ROWS][LORA_QKV_STAGED_RANKS];
    int c = (int)(blockIdx.y * blockDim.x + threadIdx.x);
    int row0 = (int)blockIdx.x * LORA_QKV_ROWS;
    int total = rank_q + rank_k + rank_v, offset = 0;
    float totals[LORA_QKV_ROWS];
    for (int i = 0; i < LORA_QKV_ROWS; i++) totals[i] = 0.0f;
    for (int m = 0; m < 3; m++)
    {
        const float* a = lora_qkv_pick(m, a_q, a_k, a_v);
        int rank = lora_qkv_pick(m, rank_q, rank_k, rank_v);
        float sums[LORA_QKV_ROWS];
        for (int i = 0; i < LORA_QKV_ROWS; i++) sums[i] = 0.0f;
        for (int j0 = 0; j0 < rank; j0 += LORA_QKV_STAGED_RANKS)
        {
            int ranks = rank - j0 < LORA_QKV_STAGED_RANKS ? rank - j0 : LORA_QKV_STAGED_RANKS;
            __syncthreads();
            for (int t = (int)threadIdx.x; t < LORA_QKV_ROWS * LORA_QKV_STAGED_RANKS; t += (int)blockDim.x)
            {
                int i = t / LORA_QKV_STAGED_RANKS, jj = t % LORA_QKV_STAGED_RANKS;
                staged[i][jj] = row0 + i < rows && jj < ranks ? du[(long long)(row0 + i) * total + offset + j0 + jj] : 0.0f;
            }
            __syncthreads();
            if (c < channels)
                for (int jj = 0; jj < ranks; jj++)
                {
                    float av = a[(long long)(j0 + jj) * channels + c];
                    for (int i = 0; i < LORA_QKV_ROWS; i++) sums[i] += staged[i][jj] * av;
                }
        }
        if (rank > 0 && c < channels)
        {
            unsigned threshold = lora_qkv_pick(m, threshold_q, threshold_k, threshold_v);
            float keep_scale = lora_qkv_pick(m, keep_q, keep_k, keep_v);
            unsigned long long seed = lora_qkv_pick(m, seed_q, seed_k, seed_v);
            for (int i = 0; i < LORA_QKV_ROWS; i++)
            {
                long long index = (long long)(row0 + i) * channels + c;
                float v = dropout_bits24(seed, index) >= threshold ? __fmul_rn(sums[i], keep_scale) : 0.0f;
                totals[i] = __fadd_rn(totals[i], v);
            }
        }
        offset += rank;
    }
    if (c >= channels) return;
    for (int i = 0; i < LORA_QKV_ROWS && row0 + i < rows; i++)
    {
        long long index = (long long)(row0 + i) * channels + c;
        store<D>(dx, index, accumulate ? __fadd_rn(load<D>(dx, index), totals[i]) : totals[i]);
    }
}

PHI2_KERNEL void lora_qkv_down_f32(const float* x, const float* a_q, const float* a_k, const float* a_v, float* u, int rank_q, int rank_k,
                                 int rank_v, unsigned threshold_q, unsigned threshold_k, unsigned threshold_v, float keep_q,
                                 float keep_k, float keep_v, unsigned long long seed_q, unsigned long long seed_k,
                                 unsigned long long seed_v, int rows, int channels)
{
    lora_qkv_down<dtype_f32>(x, a_q, a_k, a_v, u, rank_q, rank_k, rank_v, threshold_q, threshold_k, threshold_v, keep_q, keep_k, keep_v,
                            seed_q, seed_k, seed_v, rows, channels);
}
PHI2_KERNEL void lora_qkv_up_f32(const float* u, const float* b_q, const float* b_k, const float* b_v, const float* base, float* y,
                               int rank_q, int rank_k, int rank_v, float scaling_q, float scaling_k, float scaling_v, int rows,
                               int channels)
{
    lora_qkv_up<dtype_f32>(u, b_q, b_k, b_v, base, y, rank_q, rank_k, rank_v, scaling_q, scaling_k, scaling_v, rows, channels);
}
PHI2_KERNEL void lora_qkv_up_backward_f32(const float* dy, const float* b_q, const float* b_k, const float* b_v, float* du, int rank_q,
                                        int rank_k, int rank_v, float scaling_q, float scaling_k, float scaling_v, int rows,
                                        int channels)
{
    lora_qkv_up_backward<dtype_f32>(dy, b_q, b_k, b_v, du, rank_q, rank_k, rank_v, scaling_q, scaling_k, scaling_v, rows, channels);
}
PHI2_KERNEL void lora_qkv_weight_grad_f32(const float* left, const float* right, float* grad_q, float* grad_k, float* grad_v, int rank_q,
                                        int rank_k, int rank_v, unsigned threshold_q, unsigned threshold_k, unsigned threshold_v,
                                        float keep_q, float keep_k, float keep_v, unsigned long long seed_q,
                                        unsigned long long seed_k, unsigned long long seed_v, float scaling_q, float scaling_k,
                                        float scaling_v, int of_a, int accumulate, int rows, int channels)
{
    lora_qkv_weight_grad<dtype_f32>(left, right, grad_q, grad_k, grad_v, rank_q, rank_k, rank_v, threshold_q, threshold_k, threshold_v,
                                   keep_q, keep_k, keep_v, seed_q, seed_k, seed_v, scaling_q, scaling_k, scaling_v, of_a, accumulate,
                                   rows, channels);
}
PHI2_KERNEL void lora_qkv_down_backward_f32(const float* du, const float* a_q, const float* a_k, const float* a_v, float* dx, int rank_q,
                                          int rank_k, int rank_v, unsigned threshold_q, unsigned threshold_k, unsigned threshold_v,
                                          float keep_q, float keep_k, float keep_v, unsigned long long seed_q,
                                          unsigned long long seed_k, unsigned long long seed_v, int accumulate, int rows,
                                          int channels)
{
    lora_qkv_down_backward<dtype_f32>(du, a_q, a_k, a_v, dx, rank_q, rank_k, rank_v, threshold_q, threshold_k, threshold_v, keep_q,
                                     keep_k, keep_v, seed_q, seed_k, seed_v, accumulate, rows, channels);
}
PHI2_KERNEL void lora_qkv_down_bf16(const bf16_t* x, const float* a_q, const float* a_k, const float* a_v, float* u, int rank_q, int rank_k,
                                 int rank_v, unsigned threshold_q, unsigned threshold_k, unsigned threshold_v, float keep_q,
                                 float keep_k, float keep_v, unsigned long long seed_q, unsigned long long seed_k,
                                 unsigned long long seed_v, int rows, int channels)
{
    lora_qkv_mma_down(x, a_q, a_k, a_v, u, rank_q, rank_k, rank_v, threshold_q, threshold_k, threshold_v, keep_q, keep_k, keep_v,
                      seed_q, seed_k, seed_v, rows, channels);
}
PHI2_KERNEL void lora_qkv_up_bf16(const float* u, const float* b_q, const float* b_k, const float* b_v, const bf16_t* base, bf16_t* y,
                               int rank_q, int rank_k, int rank_v, float scaling_q, float scaling_k, float scaling_v, int rows,
                               int channels)
{
    lora_qkv_up<dtype_bf16>(u, b_q, b_k, b_v, base, y, rank_q, rank_k, rank_v, scaling_q, scaling_k, scaling_v, rows, channels);
}
PHI2_KERNEL void lora_qkv_up_backward_bf16(const bf16_t* dy, const float* b_q, const float* b_k, const float* b_v, float* du, int rank_q,
                                        int rank_k, int rank_v, float scaling_q, float scaling_k, float scaling_v, int rows,
                                        int channels)
{
    lora_qkv_mma_up_backward(dy, b_q, b_k, b_v, du, rank_q, rank_k, rank_v, scaling_q, scaling_k, scaling_v, rows, channels);
}
PHI2_KERNEL void lora_qkv_weight_grad_bf16(const bf16_t* left, const float* right, float* grad_q, float* grad_k, float* grad_v, int rank_q,
                                        int rank_k, int rank_v, unsigned threshold_q, unsigned threshold_k, unsigned threshold_v,
                                        float keep_q, float keep_k, float keep_v, unsigned long long seed_q,
                                        unsigned long long seed_k, unsigned long long seed_v, float scaling_q, float scaling_k,
                                        float scaling_v, int of_a, int accumulate, int rows, int channels)
{
    lora_qkv_mma_weight_grad(left, right, grad_q, grad_k, grad_v, rank_q, rank_k, rank_v, threshold_q, threshold_k, threshold_v,
                             keep_q, keep_k, keep_v, seed_q, seed_k, seed_v, scaling_q, scaling_k, scaling_v, of_a, accumulate,
                             rows, channels);
}
PHI2_KERNEL void lora_qkv_down_backward_bf16(const float* du, const float* a_q, const float* a_k, const float* a_v, bf16_t* dx, int rank_q,
                                          int rank_k, int rank_v, unsigned threshold_q, unsigned threshold_k, unsigned threshold_v,
                                          float keep_q, float keep_k, float keep_v, unsigned long long seed_q,
                                          unsigned long long seed_k, unsigned long long seed_v, int accumulate, int rows,
                                          int channels)
{
    lora_qkv_mma_down_backward(du, a_q, a_k, a_v, dx, rank_q, rank_k, rank_v, threshold_q, threshold_k, threshold_v, keep_q, keep_k,
                               keep_v, seed_q, seed_k, seed_v, accumulate, rows, channels);
}
PHI2_KERNEL void lora_qkv_down_f16(const f16_t* x, const float* a_q, const float* a_k, const float* a_v, float* u, int rank_q, int rank_k,
                                 int rank_v, unsigned threshold_q, unsigned threshold_k, unsigned threshold_v, float keep_q,
                                 float keep_k, float keep_v, unsigned long long seed_q, unsigned long long seed_k,
                                 unsigned long long seed_v, int rows, int channels)
{
    lora_qkv_down<dtype_f16>(x, a_q, a_k, a_v, u, rank_q, rank_k, rank_v, threshold_q, threshold_k, threshold_v, keep_q, keep_k, keep_v,
                            seed_q, seed_k, seed_v, rows, channels);
}
PHI2_KERNEL void lora_qkv_up_f16(const float* u, const float* b_q, const float* b_k, const float* b_v, const f16_t* base, f16_t* y,
                               int rank_q, int rank_k, int rank_v, float scaling_q, float scaling_k, float scaling_v, int rows,
                               int channels)
{
    lora_qkv_up<dtype_f16>(u, b_q, b_k, b_v, base, y, rank_q, rank_k, rank_v, scaling_q, scaling_k, scaling_v, rows, channels);
}
PHI2_KERNEL void lora_qkv_up_backward_f16(const f16_t* dy, const float* b_q, const float* b_k, const float* b_v, float* du, int rank_q,
                                        int rank_k, int rank_v, float scaling_q, float scaling_k, float scaling_v, int rows,
                                        int channels)
{
    lora_qkv_up_backward<dtype_f16>(dy, b_q, b_k, b_v, du, rank_q, rank_k, rank_v, scaling_q, scaling_k, scaling_v, rows, channels);
}
PHI2_KERNEL void lora_qkv_weight_grad_f16(const f16_t* left, const float* right, float* grad_q, float* grad_k, float* grad_v, int rank_q,
                                        int rank_k, int rank_v, unsigned threshold_q, unsigned threshold_k, unsigned threshold_v,
                                        float keep_q, float keep_k, float keep_v, unsigned long long seed_q,
                                        unsigned long long seed_k, unsigned long long seed_v, float scaling_q, float scaling_k,
                                        float scaling_v, int of_a, int accumulate, int rows, int channels)
{
    lora_qkv_weight_grad<dtype_f16>(left, right, grad_q, grad_k, grad_v, rank_q, rank_k, rank_v, threshold_q, threshold_k, threshold_v,
                                   keep_q, keep_k, keep_v, seed_q, seed_k, seed_v, scaling_q, scaling_k, scaling_v, of_a, accumulate,
                                   rows, channels);
}
PHI2_KERNEL void lora_qkv_down_backward_f16(const float* du, const float* a_q, const float* a_k, const float* a_v, f16_t* dx, int rank_q,
                                          int rank_k, int rank_v, unsigned threshold_q, unsigned threshold_k, unsigned threshold_v,
                                          float keep_q, float keep_k, float keep_v, unsigned long long seed_q,
                                          unsigned long long seed_k, unsigned long long seed_v, int accumulate, int rows,
                                          int channels)
{
    lora_qkv_down_backward<dtype_f16>(du, a_q, a_k, a_v, dx, rank_q, rank_k, rank_v, threshold_q, threshold_k, threshold_v, keep_q,
                                     keep_k, keep_v, seed_q, seed_k, seed_v, accumulate, rows, channels);
}
