// decode.cu - the end of a decode step captured in a CUDA graph (src/Phi2Native/Text/DecodeGraph.cs): each row's greedy
// token written where the next replay's embedding reads it, and the KV cache's per-row positions advanced by one, so
// a replayed step needs nothing from the host but the one read of the chosen ids.
//
// Kernels (dtype of logits: f32, bf16, f16):
//   decode_next_{dtype}(logits, ids, offsets, key_times, rows, vocab)
//     logits [rows, vocab] row-major, or null (then no token is chosen: the host samples and uploads the ids);
//     ids I32 [rows]: ids[r] = the lowest c with logits[r, c] maximal (Sampler.ArgMax's rule: an equal later logit
//       never wins; a row of -inf gives 0), or -1 when the row holds a NaN (the host refuses it, as the sampler does);
//     offsets, key_times I32 [rows] (CachePositions' RowOffsets and RowKeyTimes), each incremented by 1 in place
//       (either may be null: not advanced).
//   grid (rows), block PHI2_DECODE_NEXT_THREADS (256, a power of two: the tree reduction halves it), no dynamic shared
//   memory; 2 KiB of static shared memory (a value and an id per thread).
// Numerics: comparisons only, in fp32 after widening (exact for bf16 and f16), so the choice is the host's on the same
// logits bit for bit.
// Cost per launch: rows x vocab logits read once (none when null); 3 x rows int32 read and written.
//
// Each thread scans its strided columns c = t, t + 256, ... in increasing order (a tie keeps the earlier id), then
// the block halves (value, id) pairs through shared memory, a pair winning when its value is larger or equal with a
// lower id; a NaN wins every comparison, so one anywhere in the row reaches thread 0.
#include "common.cuh"

#define PHI2_DECODE_NEXT_THREADS 256

// Whether (value, id) beats (best, best_id): NaN first (then sticky), then the larger value, then the lower id.
PHI2_DEVICE bool decode_next_beats(float value, int id, float best, int best_id)
{
    if (best != best) return false;
    if (value != value) return true;
    return value > best || (value == best && id < best_id);
}

template <typename D>
PHI2_DEVICE void decode_next(const typename D::type* logits, int* ids, int* offsets, int* key_times, int rows, int vocab)
{
    __shared__ float best_values[PHI2_DECODE_NEXT_THREADS];
    __shared__ int best_ids[PHI2_DECODE_NEXT_THREADS];
    const int r = (int)blockIdx.x;
    if (r >= rows) return;
    if (logits != nullptr)
    {
        const typename D::type* row = logits + (long long)r * vocab;
        float best = __uint_as_float(0xff800000u);   // -inf
        int best_id = 0x7fffffff;                     // loses every tie: a thread without columns never wins
        for (int c = (int)threadIdx.x; c < vocab; c += (int)blockDim.x)
        {
            float v = load<D>(row, c);
            if (decode_next_beats(v, c, best, best_id)) { best = v; best_id = c; }
        }
        best_values[threadIdx.x] = best;
        best_ids[threadIdx.x] = best_id;
        __syncthreads();
        for (int half = (int)blockDim.x / 2; half > 0; half >>= 1)
        {
            if ((int)threadIdx.x < half)
            {
                float v = best_values[threadIdx.x + half];
                int id = best_ids[threadIdx.x + half];
                if (decode_next_beats(v, id, best_values[threadIdx.x], best_ids[threadIdx.x]))
                {
                    best_values[threadIdx.x] = v;
                    best_ids[threadIdx.x] = id;
                }
            }
            __syncthreads();
        }
        if (threadIdx.x == 0) ids[r] = best_values[0] != best_values[0] ? -1 : best_ids[0];
    }
    if (threadIdx.x == 0)
    {
        if (offsets != nullptr) offsets[r] += 1;
        if (key_times != nullptr) key_times[r] += 1;
    }
}

PHI2_KERNEL void decode_next_f32(const float* logits, int* ids, int* offsets, int* key_times, int rows, int vocab)
{
    decode_next<dtype_f32>(logits, ids, offsets, key_times, rows, vocab);
}
PHI2_KERNEL void decode_next_bf16(const bf16_t* logits, int* ids, int* offsets, int* key_times, int rows, int vocab)
{
    decode_next<dtype_bf16>(logits, ids, offsets, key_times, rows, vocab);
}
PHI2_KERNEL void decode_next_f16(const f16_t* logits, int* ids, int* offsets, int* key_times, int rows, int vocab)
{
    decode_next<dtype_f16>(logits, ids, offsets, key_times, rows, vocab);
}
