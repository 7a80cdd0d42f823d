// transpose.cu - the transpose of a row-major matrix x [rows, cols] into y [cols, rows], as the CPU backend's
// Transpose (src/Phi2Native.Backends/Cpu/CpuBackend.cs).
//
// Kernels (dtype: f32, bf16; an exact move of the stored bits, so no load/store through fp32):
//   transpose_{dtype}(x, y, rows, cols)
//       grid ((cols + 31) / 32, (rows + 31) / 32), block (32, 8), no dynamic shared memory. blockDim.x must be 32
//       (a tile's column); any blockDim.y from 1 to 32 works (each thread walks the tile's rows threadIdx.y, + blockDim.y,
//       ...). y must not overlap x. No backward of its own (the gradient of a transpose is a transpose); nothing saved.
//   Each block moves one 32 x 32 tile through shared memory: it reads the tile's rows from x and writes the tile's
//   columns as rows of y, so both the global reads and the global writes are coalesced (consecutive threadIdx.x,
//   consecutive addresses). The shared tile is padded so that reading down a column hits 32 different banks: one
//   extra element per row for fp32 (a row stride of 33 words), two for 16-bit elements (34 halves = 17 words, odd, so
//   column k of rows 0..31 falls in 32 distinct banks; two threads storing halves of one word do not conflict).
#include "common.cuh"

#define PHI2_TRANSPOSE_TILE 32

template <typename D>
PHI2_DEVICE void transpose(const typename D::type* x, typename D::type* y, int rows, int cols)
{
    typedef typename D::type T;
    __shared__ T tile[PHI2_TRANSPOSE_TILE][PHI2_TRANSPOSE_TILE + 4 / sizeof(T)];
    int c0 = (int)blockIdx.x * PHI2_TRANSPOSE_TILE, r0 = (int)blockIdx.y * PHI2_TRANSPOSE_TILE;
    int tx = (int)threadIdx.x;
    for (int k = (int)threadIdx.y; k < PHI2_TRANSPOSE_TILE; k += (int)blockDim.y)
    {
        int r = r0 + k, c = c0 + tx;
        if (r < rows && c < cols) tile[k][tx] = x[(long long)r * cols + c];
    }
    __syncthreads();
    for (int k = (int)threadIdx.y; k < PHI2_TRANSPOSE_TILE; k += (int)blockDim.y)
    {
        int c = c0 + k, r = r0 + tx; // row c of y, column r
        if (c < cols && r < rows) y[(long long)c * rows + r] = tile[tx][k];
    }
}

PHI2_KERNEL void transpose_f32(const float* x, float* y, int rows, int cols) { transpose<dtype_f32>(x, y, rows, cols); }
PHI2_KERNEL void transpose_bf16(const bf16_t* x, bf16_t* y, int rows, int cols) { transpose<dtype_bf16>(x, y, rows, cols); }
