// test_mma.cu - kernels for the tensor-core wrappers of common.cuh (mma_m16n8k16_*, ldmatrix_*), compiled
// only into the emulator, so MmaEmulationTests can show that fragments loaded by hand from the PTX ISA's
// table (common.cuh's) give the plain product, that a wrong fragment index does not, that a product over
// several k tiles accumulates, and that what .sync.aligned forbids fails the launch. Never embedded for
// NVRTC. The tile products through ldmatrix and the fragment dump that pins the layout are in
// ../mma_check.cu, so the GPU runs them too.
//
// Matrices are row-major; A is m x k, B is k x n, C and D are m x n fp32. Launches: grid (1), block (32),
// no dynamic shared memory, unless stated.
//   emu_test_mma_by_hand_bf16(a, b, c, d)     D = A * B + C (16x16 by 16x8) with fragments loaded from
//                                             global memory by the table's formulas, no ldmatrix
//   emu_test_mma_by_hand_swapped_bf16(...)    the same with a[1] and a[2] swapped: a planted bug
//   emu_test_mma_gemm_bf16(a, b, d, m, n, k)  grid (m / 16), block (32 * n / 8), dynamic shared
//                                             (16 * k + k * n) * 2 bytes: D = A * B, one warp per 16x8 tile
//                                             of D, looping over k in steps of 16 (m % 16 = n % 8 = k % 16 = 0)
//   emu_test_mma_lane_exits(d)                lane 31 returns before the mma: a planted bug
//   emu_test_ldmatrix_misaligned(a, out)      ldmatrix_x4 from row addresses 2 bytes past 16-byte alignment
#include "../common.cuh"

// The table, read straight from global memory: a[0] = A[g][2t..2t+1], a[1] = A[g+8][2t..2t+1],
// a[2] = A[g][2t+8..2t+9], a[3] = A[g+8][2t+8..2t+9]; b[0] = B[2t..2t+1][g], b[1] = B[2t+8..2t+9][g].
// Swapped puts a[1]'s pair in a[2] and a[2]'s in a[1]: the kind of slip a hand-written loader makes.
template <bool Swapped>
PHI2_DEVICE void emu_mma_by_hand(const bf16_t* a, const bf16_t* b, const float* c, float* d)
{
    unsigned lane = threadIdx.x % 32, g = lane >> 2, t = lane % 4;
    unsigned fa[4], fb[2];
    fa[0] = pack_b16x2(a[g * 16 + 2 * t], a[g * 16 + 2 * t + 1]);
    fa[Swapped ? 2 : 1] = pack_b16x2(a[(g + 8) * 16 + 2 * t], a[(g + 8) * 16 + 2 * t + 1]);
    fa[Swapped ? 1 : 2] = pack_b16x2(a[g * 16 + 2 * t + 8], a[g * 16 + 2 * t + 9]);
    fa[3] = pack_b16x2(a[(g + 8) * 16 + 2 * t + 8], a[(g + 8) * 16 + 2 * t + 9]);
    fb[0] = pack_b16x2(b[(2 * t) * 8 + g], b[(2 * t + 1) * 8 + g]);
    fb[1] = pack_b16x2(b[(2 * t + 8) * 8 + g], b[(2 * t + 9) * 8 + g]);
    float acc[4] = { c[g * 8 + 2 * t], c[g * 8 + 2 * t + 1], c[(g + 8) * 8 + 2 * t], c[(g + 8) * 8 + 2 * t + 1] };
    mma_m16n8k16_bf16(acc, fa, fb);
    d[g * 8 + 2 * t] = acc[0];
    d[g * 8 + 2 * t + 1] = acc[1];
    d[(g + 8) * 8 + 2 * t] = acc[2];
    d[(g + 8) * 8 + 2 * t + 1] = acc[3];
}

PHI2_KERNEL void emu_test_mma_by_hand_bf16(const bf16_t* a, const bf16_t* b, const float* c, float* d)
{
    emu_mma_by_hand<false>(a, b, c, d);
}

PHI2_KERNEL void emu_test_mma_by_hand_swapped_bf16(const bf16_t* a, const bf16_t* b, const float* c, float* d)
{
    emu_mma_by_hand<true>(a, b, c, d);
}

// Shared memory: the block's 16 rows of A (16 x k), then all of B (k x n); row strides of k and n
// elements keep every ldmatrix row address 16-byte aligned for k % 16 == 0 and n % 8 == 0.
PHI2_KERNEL void emu_test_mma_gemm_bf16(const bf16_t* a, const bf16_t* b, float* d, int m, int n, int k)
{
    PHI2_DYNAMIC_SHARED(bf16_t, sa);
    bf16_t* sb = sa + 16 * k;
    unsigned lane = threadIdx.x % 32, g = lane >> 2, t = lane % 4;
    int m0 = (int)blockIdx.x * 16, n0 = (int)(threadIdx.x / 32) * 8;
    for (int i = (int)threadIdx.x; i < 16 * k; i += (int)blockDim.x) sa[i] = a[(m0 + i / k) * k + i % k];
    for (int i = (int)threadIdx.x; i < k * n; i += (int)blockDim.x) sb[i] = b[i];
    __syncthreads();
    if (m0 + 16 > m) return; // never with a whole grid; keeps a bad launch from writing out of bounds

    float acc[4] = { 0.0f, 0.0f, 0.0f, 0.0f };
    for (int k0 = 0; k0 < k; k0 += 16)
    {
        unsigned fa[4], fb[2];
        ldmatrix_x4(fa, &sa[(lane % 16) * k + k0 + (lane / 16) * 8]);
        ldmatrix_x2_trans(fb, &sb[(k0 + lane % 16) * n + n0]);
        mma_m16n8k16_bf16(acc, fa, fb);
    }
    d[(m0 + g) * n + n0 + 2 * t] = acc[0];
    d[(m0 + g) * n + n0 + 2 * t + 1] = acc[1];
    d[(m0 + g + 8) * n + n0 + 2 * t] = acc[2];
    d[(m0 + g + 8) * n + n0 + 2 * t + 1] = acc[3];
}

PHI2_KERNEL void emu_test_mma_lane_exits(float* d)
{
    unsigned lane = threadIdx.x % 32;
    if (lane == 31) return;
    unsigned fa[4] = { 0, 0, 0, 0 }, fb[2] = { 0, 0 };
    float acc[4] = { 0.0f, 0.0f, 0.0f, 0.0f };
    mma_m16n8k16_bf16(acc, fa, fb);
    d[lane] = acc[0];
}

PHI2_KERNEL void emu_test_ldmatrix_misaligned(const unsigned short* a, unsigned* out)
{
    __shared__ __align__(16) unsigned short sa[16 * 17];
    unsigned lane = threadIdx.x % 32;
    for (unsigned i = lane; i < 16 * 17; i += 32) sa[i] = a[i];
    __syncthreads();
    unsigned r[4];
    ldmatrix_x4(r, &sa[(lane % 16) * 16 + (lane / 16) * 8 + 1]);
    for (int i = 0; i < 4; i++) out[lane * 4 + i] = r[i];
}
