using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Phi2Native.Backends.Cpu;

// Packing: copies a block of op(A) or op(B) into the contiguous micro-panel layout the kernels read,
// absorbing the transposes and leading dimensions. Short panels at the matrix edge are zero-padded
// to the full MR / NR, so the kernels never branch on the edge; their extra rows/columns of C are
// discarded by the caller.
//
//   packed A block [ceil(mc / MR), kc, MR]: panel s, step p, lane r  = op(A)[ic + s*MR + r, pc + p]
//   packed B panel [ceil(nc / NR), kc, NR]: panel s, step p, lane j  = op(B)[pc + p, jc + s*NR + j]
//
// Either the lanes of a panel are contiguous in storage (A^T, B: a copy, walked one stored row at
// a time so that the reads stream), or each lane is one stored row (A, B^T: a transpose, done in
// 4 x 8 register blocks for float). Packing is about 1/MC (A) and 1/M (B) of the kernel's work per
// element, but a scalar transpose was 16% of a 512x2560x2560 x.W^T product, hence the SIMD blocks.

internal static unsafe partial class CpuGemm
{
    /// <summary>
    /// Packs op(A)[ic .. ic+mc, pc .. pc+kc] into MR-lane micro-panels at <paramref name="dst"/>.
    /// <paramref name="a"/> is A stored [m, lda] (not transposed) or [k, lda] (transposed).
    /// </summary>
    private static void PackA<T>(bool transposed, T* a, nint lda, int ic, int pc, int mc, int kc, int mr, T* dst)
        where T : unmanaged, INumber<T>
    {
        if (transposed) CopyPanels(a + pc * lda + ic, lda, dst, mr, mc, kc);  // op(A)[i, p] = a[p, i]
        else TransposePanels(a + ic * lda + pc, lda, dst, mr, mc, kc);      // op(A)[i, p] = a[i, p]
    }

    /// <summary>
    /// Packs op(B)[pc .. pc+kc, jc .. jc+nc] into NR-lane micro-panels at <paramref name="dst"/>.
    /// <paramref name="b"/> is B stored [k, ldb] (not transposed) or [n, ldb] (transposed: a Linear weight [out, in]).
    /// </summary>
    private static void PackB<T>(bool transposed, T* b, nint ldb, int pc, int jc, int kc, int nc, int nr, T* dst)
        where T : unmanaged, INumber<T>
    {
        if (transposed) TransposePanels(b + jc * ldb + pc, ldb, dst, nr, nc, kc);  // op(B)[p, j] = b[j, p]
        else CopyPanels(b + pc * ldb + jc, ldb, dst, nr, nc, kc);                 // op(B)[p, j] = b[p, j]
    }

    /// <summary>
    /// Panels [ceil(lanes / width), steps, width] from src[step, lane] (row stride ld): lane l of step p
    /// is src[p * ld + l]. One stored row is spread over all panels before the next is read.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void CopyPanels<T>(T* src, nint ld, T* dst, int width, int lanes, int steps)
        where T : unmanaged, INumber<T>
    {
        nint panelSize = (nint)width * steps;
        for (int p = 0; p < steps; p++, src += ld)
        {
            T* d = dst + p * width;
            for (int l0 = 0; l0 < lanes; l0 += width, d += panelSize)
            {
                int count = Math.Min(width, lanes - l0);
                T* s = src + l0;
                int j = 0;
                for (; j + Vector256<T>.Count <= count; j += Vector256<T>.Count) Vector256.Store(Vector256.Load(s + j), d + j);
                for (; j < count; j++) d[j] = s[j];
                for (; j < width; j++) d[j] = T.Zero;
            }
        }
    }

    /// <summary>
    /// Panels [ceil(lanes / width), steps, width] from src[lane, step] (row stride ld): lane l of step p
    /// is src[l * ld + p], i.e. each stored row becomes one lane.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void TransposePanels<T>(T* src, nint ld, T* dst, int width, int lanes, int steps)
        where T : unmanaged, INumber<T>
    {
        nint panelSize = (nint)width * steps;
        for (int l0 = 0; l0 < lanes; l0 += width, dst += panelSize, src += width * ld)
        {
            int count = Math.Min(width, lanes - l0);
            int r = 0;
            if (typeof(T) == typeof(float) && Avx.IsSupported)
                for (; r + 4 <= count; r += 4)
                    Transpose4Rows((float*)(src + r * ld), ld, (float*)(dst + r), width, steps);
            for (; r < count; r++)
            {
                T* s = src + r * ld, d = dst + r;
                for (int p = 0; p < steps; p++, d += width) *d = s[p];
            }
            for (; r < width; r++)
            {
                T* d = dst + r;
                for (int p = 0; p < steps; p++, d += width) *d = T.Zero;
            }
        }
    }

    /// <summary>
    /// dst[p, 0..4) = (s0[p], s1[p], s2[p], s3[p]) for four rows s_i = src + i ld and p in [0, steps),
    /// dst row stride width: eight steps per round as a 4 x 8 register transpose (8 shuffles, 8 stores).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose4Rows(float* src, nint ld, float* dst, int width, int steps)
    {
        float* s0 = src, s1 = src + ld, s2 = src + 2 * ld, s3 = src + 3 * ld;
        nint w = width;
        int p = 0;
        for (; p + 8 <= steps; p += 8, dst += 8 * w)
        {
            Vector256<float> r0 = Avx.LoadVector256(s0 + p), r1 = Avx.LoadVector256(s1 + p);
            Vector256<float> r2 = Avx.LoadVector256(s2 + p), r3 = Avx.LoadVector256(s3 + p);
            // t0 = r0_0 r1_0 r0_1 r1_1 | r0_4 r1_4 r0_5 r1_5,  t1 = (steps 2, 3 | 6, 7); t2, t3 likewise for r2, r3
            Vector256<float> t0 = Avx.UnpackLow(r0, r1), t1 = Avx.UnpackHigh(r0, r1);
            Vector256<float> t2 = Avx.UnpackLow(r2, r3), t3 = Avx.UnpackHigh(r2, r3);
            // u0 = step 0 | step 4, u1 = 1 | 5, u2 = 2 | 6, u3 = 3 | 7, four lanes each
            Vector256<float> u0 = Avx.Shuffle(t0, t2, 0x44), u1 = Avx.Shuffle(t0, t2, 0xEE);
            Vector256<float> u2 = Avx.Shuffle(t1, t3, 0x44), u3 = Avx.Shuffle(t1, t3, 0xEE);
            u0.GetLower().Store(dst); u1.GetLower().Store(dst + w); u2.GetLower().Store(dst + 2 * w); u3.GetLower().Store(dst + 3 * w);
            u0.GetUpper().Store(dst + 4 * w); u1.GetUpper().Store(dst + 5 * w); u2.GetUpper().Store(dst + 6 * w); u3.GetUpper().Store(dst + 7 * w);
        }
        for (; p < steps; p++, dst += w)
        {
            dst[0] = s0[p]; dst[1] = s1[p]; dst[2] = s2[p]; dst[3] = s3[p];
        }
    }

    /// <summary>
    /// Per-thread packing memory: [packed A block | packed B panel | one MR x NR edge tile], each
    /// 64-byte aligned, grown on demand and kept for the thread's lifetime so that repeated
    /// products allocate nothing. Pinned, so the pointers stay valid without a fixed block.
    /// </summary>
    private static class PackBuffers<T> where T : unmanaged
    {
        [ThreadStatic] private static T[]? s_storage;

        /// <summary>Returns 64-byte-aligned scratch of at least the three sizes (in elements), valid until the thread's next call.</summary>
        public static void Get(nint aElements, nint bElements, nint tileElements, out T* packA, out T* packB, out T* tile)
        {
            nint perLine = 64 / sizeof(T);
            nint aLen = RoundUp(aElements, perLine), bLen = RoundUp(bElements, perLine), tLen = RoundUp(tileElements, perLine);
            nint needed = aLen + bLen + tLen + perLine;
            T[]? storage = s_storage;
            if (storage is null || storage.Length < needed)
            {
                storage = GC.AllocateUninitializedArray<T>(checked((int)needed), pinned: true);
                s_storage = storage;
            }
            nint start = (nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(storage));
            T* aligned = (T*)((start + 63) & ~(nint)63);
            packA = aligned;
            packB = aligned + aLen;
            tile = aligned + aLen + bLen;
        }

        private static nint RoundUp(nint x, nint multiple) => (x + multiple - 1) / multiple * multiple;
    }
}
