// test_async.cu - kernels for common.cuh's cp.async wrappers (cp_async_*_16, cp_async_commit_group,
// cp_async_wait_group), compiled only into the emulator, so CpAsyncEmulationTests can pin the group semantics
// chunk by chunk and show that a missing wait or barrier reads poison (0xFFFF in every 16-bit lane) instead of data.
// Never embedded for NVRTC (the wrappers' PTX is compiled with the kernel files that use them).
//
// A tile is 64 chunks of 16 bytes (512 16-bit values); launches: grid (1), block (32), no dynamic shared memory.
//   emu_test_cp_async_groups(src, after_first, after_all, readable)
//       lane i copies chunk i in group 0 (cp_async_ca_16) and chunk 32 + i in group 1 (cp_async_cg_16_or_zero,
//       reading only chunks below `readable`; the others become zeros); after cp_async_wait_group<1> and a barrier
//       the tile goes to after_first (group 1 still in flight), after cp_async_wait_group<0> and a barrier to after_all
//   emu_test_cp_async_missing_wait(src, out)      chunk i by lane i, committed, a barrier but no wait: a planted bug
//   emu_test_cp_async_missing_barrier(src, out)   each lane waits for its own chunk and reads its neighbour's
//                                                  without a barrier: a planted bug
//   emu_test_cp_async_misaligned(src, out)        a source 2 bytes past 16-byte alignment
#include "../common.cuh"

#define EMU_TEST_ASYNC_CHUNKS 64

PHI2_DEVICE void emu_async_dump(const unsigned short* tile, unsigned short* out)
{
    for (int i = (int)threadIdx.x; i < EMU_TEST_ASYNC_CHUNKS * 8; i += 32) out[i] = tile[i];
}

PHI2_KERNEL void emu_test_cp_async_groups(const unsigned short* src, unsigned short* after_first, unsigned short* after_all,
                                          int readable)
{
    __shared__ __align__(16) unsigned short tile[EMU_TEST_ASYNC_CHUNKS * 8];
    int lane = (int)threadIdx.x, second = 32 + lane;
    cp_async_ca_16(&tile[lane * 8], &src[lane * 8]);
    cp_async_commit_group();
    cp_async_cg_16_or_zero(&tile[second * 8], &src[(second < readable ? second : 0) * 8], second < readable);
    cp_async_commit_group();
    cp_async_wait_group<1>();
    __syncthreads();
    emu_async_dump(tile, after_first);
    __syncthreads(); // every thread has dumped before any lands group 1
    cp_async_wait_group<0>();
    __syncthreads();
    emu_async_dump(tile, after_all);
}

PHI2_KERNEL void emu_test_cp_async_missing_wait(const unsigned short* src, unsigned short* out)
{
    __shared__ __align__(16) unsigned short tile[32 * 8];
    int lane = (int)threadIdx.x;
    cp_async_cg_16(&tile[lane * 8], &src[lane * 8]);
    cp_async_commit_group();
    __syncthreads();
    for (int e = 0; e < 8; e++) out[lane * 8 + e] = tile[lane * 8 + e];
}

PHI2_KERNEL void emu_test_cp_async_missing_barrier(const unsigned short* src, unsigned short* out)
{
    __shared__ __align__(16) unsigned short tile[32 * 8];
    int lane = (int)threadIdx.x, neighbour = (lane + 1) % 32;
    cp_async_cg_16(&tile[lane * 8], &src[lane * 8]);
    cp_async_commit_group();
    cp_async_wait_group<0>();
    for (int e = 0; e < 8; e++) out[lane * 8 + e] = tile[neighbour * 8 + e];
}

PHI2_KERNEL void emu_test_cp_async_misaligned(const unsigned short* src, unsigned short* out)
{
    __shared__ __align__(16) unsigned short tile[32 * 8];
    int lane = (int)threadIdx.x;
    cp_async_cg_16(&tile[lane * 8], &src[lane * 8 + 1]);
    cp_async_commit_group();
    cp_async_wait_group<0>();
    out[lane] = tile[lane * 8];
}
