// mma_check.cu - the tensor-core wrappers of common.cuh (ldmatrix_*, mma_m16n8k16_*) on one tile, for the
// device checks (tests/Phi2Native.DeviceChecks/MmaChecks.cs) and MmaEmulationTests. Not a production op:
// these kernels pin the emulator's fragment layouts (kernels/emu/mma.h) to the hardware's, since a layout
// that is wrong but self-consistent passes every product test on the emulator and fails only on a GPU.
//
// Matrices are row-major: A 16x16, B 16x8 (k x n) or, with b_nk != 0, its transpose 8x16 (n x k: B in
// column-major order), C and D 16x8 fp32. No forward/backward: nothing is saved.
//   mma_tile_bf16(a, b, c, d, b_nk)   grid (1), block (32), no dynamic shared memory: D = A * B + C through
//                                     ldmatrix_x4 (A), ldmatrix_x2_trans (B k x n) or ldmatrix_x2 (B n x k),
//                                     and mma_m16n8k16_bf16
//   mma_tile_f16(a, b, c, d, b_nk)    the same with fp16 inputs and mma_m16n8k16_f16
//   ldmatrix_fragments_b16(a, b_kn, b_nk, out)  grid (1), block (32): out[lane * 12 + i] = the registers each
//                                     lane receives: i = 0..3 ldmatrix_x4 of A, 4..5 ldmatrix_x2_trans of B
//                                     k x n, 6..7 ldmatrix_x2 of B n x k, 8..11 ldmatrix_x4_trans of A. Meant
//                                     for 16-bit codes naming each element's position, not numbers.
#include "common.cuh"

// The fragment coordinates are spelled out here rather than taken from emu/mma.h, so a mistake there shows.
// g = lane >> 2, t = lane % 4; c[0..3] = C[g][2t], C[g][2t+1], C[g+8][2t], C[g+8][2t+1].
template <bool Bf16>
PHI2_DEVICE void mma_check_tile(const unsigned short* a, const unsigned short* b, const float* c, float* d, int b_nk)
{
    __shared__ __align__(16) unsigned short sa[16 * 16];
    __shared__ __align__(16) unsigned short sb[16 * 8];
    unsigned lane = threadIdx.x % 32, g = lane >> 2, t = lane % 4;
    for (unsigned i = lane; i < 16 * 16; i += 32) sa[i] = a[i];
    for (unsigned i = lane; i < 16 * 8; i += 32) sb[i] = b[i];
    __syncthreads();

    unsigned fa[4], fb[2];
    ldmatrix_x4(fa, &sa[(lane % 16) * 16 + (lane / 16) * 8]);
    if (b_nk) ldmatrix_x2(fb, &sb[(lane % 8) * 16 + (lane / 8 % 2) * 8]);
    else ldmatrix_x2_trans(fb, &sb[(lane % 16) * 8]);

    float acc[4] = { c[g * 8 + 2 * t], c[g * 8 + 2 * t + 1], c[(g + 8) * 8 + 2 * t], c[(g + 8) * 8 + 2 * t + 1] };
    if (Bf16) mma_m16n8k16_bf16(acc, fa, fb);
    else mma_m16n8k16_f16(acc, fa, fb);
    d[g * 8 + 2 * t] = acc[0];
    d[g * 8 + 2 * t + 1] = acc[1];
    d[(g + 8) * 8 + 2 * t] = acc[2];
    d[(g + 8) * 8 + 2 * t + 1] = acc[3];
}

PHI2_KERNEL void mma_tile_bf16(const bf16_t* a, const bf16_t* b, const float* c, float* d, int b_nk)
{
    mma_check_tile<true>(a, b, c, d, b_nk);
}

PHI2_KERNEL void mma_tile_f16(const f16_t* a, const f16_t* b, const float* c, float* d, int b_nk)
{
    mma_check_tile<false>(a, b, c, d, b_nk);
}

PHI2_KERNEL void ldmatrix_fragments_b16(const unsigned short* a, const unsigned short* b_kn, const unsigned short* b_nk,
                                        unsigned* out)
{
    __shared__ __align__(16) unsigned short sa[16 * 16];
    __shared__ __align__(16) unsigned short skn[16 * 8];
    __shared__ __align__(16) unsigned short snk[8 * 16];
    unsigned lane = threadIdx.x % 32;
    for (unsigned i = lane; i < 16 * 16; i += 32) sa[i] = a[i];
    for (unsigned i = lane; i < 16 * 8; i += 32) skn[i] = b_kn[i];
    for (unsigned i = lane; i < 16 * 8; i += 32) snk[i] = b_nk[i];
    __syncthreads();

    unsigned r[12];
    ldmatrix_x4(&r[0], &sa[(lane % 16) * 16 + (lane / 16) * 8]);
    ldmatrix_x2_trans(&r[4], &skn[(lane % 16) * 8]);
    ldmatrix_x2(&r[6], &snk[(lane % 8) * 16 + (lane / 8 % 2) * 8]);
    ldmatrix_x4_trans(&r[8], &sa[(lane % 16) * 16 + (lane / 16) * 8]);
    for (int i = 0; i < 12; i++) out[lane * 12 + i] = r[i];
}
