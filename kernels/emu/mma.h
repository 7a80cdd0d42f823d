// mma.h - the emulated tensor-core wrappers of common.cuh (mma_m16n8k16_*, ldmatrix_*), lane by lane
// from the PTX ISA's fragment layouts. Both are warp-collective: every lane of the warp deposits its
// registers (or its row address) through warp_gather (launch.cpp), then each lane computes its own
// result from the whole warp's deposits. As on the GPU (.sync.aligned), all 32 lanes must take part:
// a block size that is not a multiple of 32, or a lane that has exited, fails the launch.
#pragma once

#include "emu.h"

#include <stdio.h>

namespace phi2_emu
{
    // Fragment coordinates, PTX ISA "Matrix fragments for mma.m16n8k16 with floating point type"
    // (f16/bf16 inputs, f32 accumulators), g = lane >> 2, t = lane % 4. Element i of a fragment is the
    // low (i even) or high (i odd) half of register i / 2: the table in common.cuh, element by element.
    // A (16x16, row-major), a0..a7: row g for a0,a1,a4,a5 and g+8 for a2,a3,a6,a7; col 2t + (i & 1), +8 for i >= 4.
    inline int mma_a_row(int lane, int i) { return (lane >> 2) + ((i & 2) ? 8 : 0); }
    inline int mma_a_col(int lane, int i) { return (lane % 4) * 2 + (i & 1) + (i >= 4 ? 8 : 0); }
    // B (16x8, column-major, k x n), b0..b3: k = 2t + (i & 1), +8 for i >= 2; n = g.
    inline int mma_b_k(int lane, int i) { return (lane % 4) * 2 + (i & 1) + (i >= 2 ? 8 : 0); }
    inline int mma_b_n(int lane) { return lane >> 2; }
    // C/D (16x8, f32), c0..c3: row g for c0,c1 and g+8 for c2,c3; col 2t + (i & 1).
    inline int mma_c_row(int lane, int i) { return (lane >> 2) + (i >= 2 ? 8 : 0); }
    inline int mma_c_col(int lane, int i) { return (lane % 4) * 2 + (i & 1); }

    inline unsigned short half_of(unsigned reg, int i) { return (unsigned short)(reg >> (16 * (i & 1))); }

    // D = A * B + C over the warp; c holds C on entry and this lane's D on return. The 16-bit inputs are
    // widened exactly (to_f32 is common.cuh's bf16_to_f32 or f16_to_f32); each product of two such
    // values is exact in fp32, and the sum runs in fp32 from C in k order. The GPU's adder order and
    // rounding inside the tensor core differ, so results agree to fp32 accumulation error, not bits.
    inline void mma_m16n8k16(float c[4], const unsigned a[4], const unsigned b[2], float (*to_f32)(unsigned short),
                             const char* op)
    {
        struct Registers { unsigned a[4]; unsigned b[2]; float c[4]; };
        Registers mine;
        memcpy(mine.a, a, sizeof mine.a);
        memcpy(mine.b, b, sizeof mine.b);
        memcpy(mine.c, c, sizeof mine.c);
        Registers all[32];
        warp_gather(0xffffffffu, &mine, sizeof mine, all, op);

        float A[16][16], B[16][8], C[16][8];
        for (int lane = 0; lane < 32; lane++)
        {
            for (int i = 0; i < 8; i++) A[mma_a_row(lane, i)][mma_a_col(lane, i)] = to_f32(half_of(all[lane].a[i / 2], i));
            for (int i = 0; i < 4; i++) B[mma_b_k(lane, i)][mma_b_n(lane)] = to_f32(half_of(all[lane].b[i / 2], i));
            for (int i = 0; i < 4; i++) C[mma_c_row(lane, i)][mma_c_col(lane, i)] = all[lane].c[i];
        }
        int self = (int)lane_id();
        for (int i = 0; i < 4; i++)
        {
            int row = mma_c_row(self, i), col = mma_c_col(self, i);
            float sum = C[row][col];
            for (int k = 0; k < 16; k++) sum += A[row][k] * B[k][col];
            c[i] = sum;
        }
    }

    // ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{.trans}.shared.b16: lanes 8j..8j+7 give the row addresses of
    // 8x8 matrix j (16 bytes a row, 16-byte aligned); each lane receives in r[j] the elements of matrix j
    // at row lane / 4, columns 2 * (lane % 4) and +1 (low half first), or with trans those of the
    // transposed matrix (element (row, col) read from row col's address, column row). The addresses of
    // lanes past 8 * count are not read, as on sm_80 and later.
    inline void ldmatrix(unsigned* r, int count, bool trans, const void* row, const char* op)
    {
        const void* rows[32];
        warp_gather(0xffffffffu, &row, sizeof row, rows, op);
        for (int lane = 0; lane < 8 * count; lane++)
        {
            if ((uintptr_t)rows[lane] % 16 == 0) continue;
            char text[160];
            snprintf(text, sizeof text, "%s: the row address %p of lane %d is not 16-byte aligned", op, rows[lane], lane);
            fail(text);
        }
        int self = (int)lane_id(), matrix_row = self >> 2, col = (self % 4) * 2;
        for (int j = 0; j < count; j++)
        {
            unsigned short e[2];
            for (int h = 0; h < 2; h++)
            {
                const void* from = trans ? rows[8 * j + col + h] : rows[8 * j + matrix_row];
                int index = trans ? matrix_row : col + h;
                memcpy(&e[h], static_cast<const unsigned char*>(from) + 2 * index, 2);
            }
            r[j] = (unsigned)e[0] | ((unsigned)e[1] << 16);
        }
    }
}
