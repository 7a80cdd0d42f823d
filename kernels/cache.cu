// cache.cu - the KV-cache write of generation, as the CPU backend's (src/Phi2Native.Backends/Ops/KvCache/KvCacheOp.cs,
// KvCacheOp.Write): keys or values source [B, T, H, D] go to rows [p, p + T) of cache [B, Tmax, H, D], p being batch row
// b's position row_positions[b] (a cache's rows may hold different lengths); the cache's other rows are untouched. Row t
// of batch b of the cache starts at element (b * Tmax + t) * H * D, so each batch's T rows are one contiguous block of
// T * H * D elements on both sides.
//
// Kernels (dtype: f32, bf16; an exact move of the stored bits, so no load/store through fp32, and NaN payloads
// survive as they do in a device memcpy):
//   cache_write_{dtype}(source, cache, row_positions, B, T, Tmax, rowElements)   rowElements = H * D
//       row_positions is I32 [B] in device memory, read there (no host wait). A row whose p is outside [0, Tmax - T]
//       (the CPU backend throws; a kernel cannot) is skipped: its cache rows keep what they held.
//       grid ((B * T * rowElements + 255) / 256), block (256), no dynamic shared memory; any block size and any grid
//       that covers B * T * rowElements work (one element per thread). source must not overlap cache.
//       Inference only: no backward, nothing saved.
#include "common.cuh"

template <typename D>
PHI2_DEVICE void cache_write(const typename D::type* source, typename D::type* cache, const int* row_positions, int B, int T, int Tmax,
                             int row_elements)
{
    long long block = (long long)T * row_elements; // one batch's rows, in source
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)B * block) return;
    long long b = i / block, within = i - b * block;
    int position = row_positions[b];
    if (position < 0 || (long long)position + T > Tmax) return;
    cache[(b * Tmax + position) * row_elements + within] = source[i];
}

PHI2_KERNEL void cache_write_f32(const float* source, float* cache, const int* row_positions, int B, int T, int Tmax, int row_elements)
{
    cache_write<dtype_f32>(source, cache, row_positions, B, T, Tmax, row_elements);
}

PHI2_KERNEL void cache_write_bf16(const bf16_t* source, bf16_t* cache, const int* row_positions, int B, int T, int Tmax, int row_elements)
{
    cache_write<dtype_bf16>(source, cache, row_positions, B, T, Tmax, row_elements);
}
