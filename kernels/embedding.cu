// embedding.cu - token embedding lookup (model.embed_tokens), forward and backward, as the CPU backend
// (src/Phi2Native.Backends/Ops/Embeddings/CpuEmbedding.cs): output[n, :] = weight[ids[n], :] over a [V, C] table and I32
// ids [N]; dWeight[ids[n], :] += dOutput[n, :].
//
// Kernels:
//   embedding_{dtype}(weight, ids, output, bad, N, V, C)               dtype: f32, bf16 (table and output alike)
//   embedding_{table}_{out}(weight, ids, output, bad, N, V, C)         f32_bf16, bf16_f32 (named as cast_{from}_{to})
//       Gathers rows, converting once through fp32 when the dtypes differ (frozen bf16 table -> fp32 activations,
//       or a trained fp32 table -> bf16 activations). Same-dtype rows are copied exactly.
//       grid (N; fewer works, each block then walks rows blockIdx.x, + gridDim.x, ...), block (any; the launcher
//       takes C rounded up to 32, at most 256), no dynamic shared memory.
//       Saves nothing for backward but the ids (the lookup is linear in the table).
//   embedding_backward_{dtype}(dOutput, ids, dWeight, bad, N, V, C)    dtype of dOutput: f32, bf16; dWeight fp32
//       dWeight[ids[n], :] += dOutput[n, :], accumulated (+=) in fp32: a parameter gradient.
//       grid (N; fewer works, as forward), block (at most 256 threads: the id tile below), no dynamic shared memory.
//
// Ids outside [0, V) never make a kernel read or write outside its buffers: forward writes a NaN row for them (so a
// bad id that nobody checked still shows downstream) and backward skips them; both record the first such position
// n in `bad` (atomicMin; null = not wanted), which the caller fills with a value >= N beforehand. The CPU backend
// throws instead: the launcher (EmbeddingKernels.CheckIds) validates ids on the host when they are there, and `bad`
// covers ids made on the device. No __trap: it would poison the whole CUDA context, not just this launch.
//
// Backward is deterministic, with no atomics on dWeight: the block of row n owns the id ids[n] only when n is the
// id's first position; it then adds the rows of every position m >= n holding that id, in increasing m, so each
// dWeight element sees dWeight + dOutput[m0] + dOutput[m1] + ... in the very order the CPU backend adds them (bit for
// bit equal to it, on a GPU too). A block whose id occurs earlier stops at that occurrence. Finding the matches scans
// the ids (staged through shared memory a tile at a time, read by every thread as a broadcast): O(N^2) cheap compares
// over the whole grid, instead of O(V * N) for a block per vocabulary row, and no host round trip to sort the ids.
#include "common.cuh"

template <typename DW, typename DO>
PHI2_DEVICE void embedding(const typename DW::type* weight, const int* ids, typename DO::type* output, int* bad, int N, int V, int C)
{
    for (int n = (int)blockIdx.x; n < N; n += (int)gridDim.x)
    {
        int id = ids[n];
        typename DO::type* out = output + (long long)n * C;
        if ((unsigned)id >= (unsigned)V)
        {
            for (int c = (int)threadIdx.x; c < C; c += (int)blockDim.x) store<DO>(out, c, __uint_as_float(0x7fc00000u));
            if (bad && threadIdx.x == 0) atomicMin(bad, n);
            continue;
        }
        const typename DW::type* row = weight + (long long)id * C;
        for (int c = (int)threadIdx.x; c < C; c += (int)blockDim.x) store<DO>(out, c, load<DW>(row, c));
    }
}

// The id tile of backward: one id per thread, so blocks of at most this many threads.
#define PHI2_EMBEDDING_ID_TILE 256

template <typename D>
PHI2_DEVICE void embedding_backward(const typename D::type* dout, const int* ids, float* dweight, int* bad, int N, int V, int C)
{
    __shared__ int tile[PHI2_EMBEDDING_ID_TILE];
    for (int n = (int)blockIdx.x; n < N; n += (int)gridDim.x)
    {
        // Every thread reads the same id and the same tiles, so every branch below is uniform across the block and
        // every thread reaches the same barriers.
        int id = ids[n];
        if ((unsigned)id >= (unsigned)V)
        {
            if (bad && threadIdx.x == 0) atomicMin(bad, n);
            continue;
        }
        float* dw = dweight + (long long)id * C;
        bool owner = true;
        for (int base = 0; base < N && owner; base += (int)blockDim.x)
        {
            __syncthreads(); // the previous tile (of this row or the last one) is read by every thread
            int m = base + (int)threadIdx.x;
            tile[threadIdx.x] = m < N ? ids[m] : -1;
            __syncthreads();
            int count = N - base < (int)blockDim.x ? N - base : (int)blockDim.x;
            for (int k = 0; k < count; k++)
            {
                if (tile[k] != id) continue;
                int at = base + k;
                if (at < n)
                {
                    owner = false; // an earlier position holds this id: its block adds these rows
                    break;
                }
                const typename D::type* row = dout + (long long)at * C;
                for (int c = (int)threadIdx.x; c < C; c += (int)blockDim.x) dw[c] += load<D>(row, c);
            }
        }
    }
}

PHI2_KERNEL void embedding_f32(const float* weight, const int* ids, float* output, int* bad, int N, int V, int C)
{
    embedding<dtype_f32, dtype_f32>(weight, ids, output, bad, N, V, C);
}

PHI2_KERNEL void embedding_bf16(const bf16_t* weight, const int* ids, bf16_t* output, int* bad, int N, int V, int C)
{
    embedding<dtype_bf16, dtype_bf16>(weight, ids, output, bad, N, V, C);
}

PHI2_KERNEL void embedding_f32_bf16(const float* weight, const int* ids, bf16_t* output, int* bad, int N, int V, int C)
{
    embedding<dtype_f32, dtype_bf16>(weight, ids, output, bad, N, V, C);
}

PHI2_KERNEL void embedding_bf16_f32(const bf16_t* weight, const int* ids, float* output, int* bad, int N, int V, int C)
{
    embedding<dtype_bf16, dtype_f32>(weight, ids, output, bad, N, V, C);
}

PHI2_KERNEL void embedding_backward_f32(const float* dout, const int* ids, float* dweight, int* bad, int N, int V, int C)
{
    embedding_backward<dtype_f32>(dout, ids, dweight, bad, N, V, C);
}

PHI2_KERNEL void embedding_backward_bf16(const bf16_t* dout, const int* ids, float* dweight, int* bad, int N, int V, int C)
{
    embedding_backward<dtype_bf16>(dout, ids, dweight, bad, N, V, C);
}
