using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Phi2Native.Backends.Cpu;

// Packing: copies a block of op(A) or op(B) into the contiguous micro-panel layout the kernels read,
// absorbing the transposes and leading dimensions. Short panels at the matrix edge are zero-padded
// to the full MR / NR, so the kernels never branch on the edge; their extra rows/columns of C are
// discarded by the caller.
//
//   packed A block [ceil(mc / MR), kc, MR]: panel s, step p, row r  = op(A)[ic + s*MR + r, pc + p]
//   packed B panel [ceil(nc / NR), kc, NR]: panel s, step p, col j  = op(B)[pc + p, jc + s*NR + j]
internal static unsafe partial class CpuGemm
{
    /// <summary>
    /// Packs op(A)[ic .. ic+mc, pc .. pc+kc] into MR-row micro-panels at <paramref name="dst"/>.
    /// <paramref name="a"/> is A stored [m, lda] (not transposed) or [k, lda] (transposed).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackA<T>(bool transposed, T* a, nint lda, int ic, int pc, int mc, int kc, int mr, T* dst)
        where T : unmanaged, INumber<T>
    {
        for (int i0 = 0; i0 < mc; i0 += mr, dst += (nint)mr * kc)
        {
            int rows = Math.Min(mr, mc - i0);
            if (transposed)
            {
                // op(A)[i, p] = a[p, i]: each k step is `rows` contiguous elements of one stored row.
                T* src = a + (nint)pc * lda + ic + i0;
                CopyRows(src, lda, dst, mr, kc, rows);
            }
            else
            {
                // op(A)[i, p] = a[i, p]: each stored row becomes one strided lane of the panel.
                T* src = a + (nint)(ic + i0) * lda + pc;
                Transpose(src, lda, dst, mr, rows, kc);
            }
        }
    }

    /// <summary>
    /// Packs op(B)[pc .. pc+kc, jc .. jc+nc] into NR-column micro-panels at <paramref name="dst"/>.
    /// <paramref name="b"/> is B stored [k, ldb] (not transposed) or [n, ldb] (transposed).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackB<T>(bool transposed, T* b, nint ldb, int pc, int jc, int kc, int nc, int nr, T* dst)
        where T : unmanaged, INumber<T>
    {
        for (int j0 = 0; j0 < nc; j0 += nr, dst += (nint)nr * kc)
        {
            int cols = Math.Min(nr, nc - j0);
            if (transposed)
            {
                // op(B)[p, j] = b[j, p] (a Linear weight stored [out, in]): stored rows become panel lanes.
                T* src = b + (nint)(jc + j0) * ldb + pc;
                Transpose(src, ldb, dst, nr, cols, kc);
            }
            else
            {
                T* src = b + (nint)pc * ldb + jc + j0;
                CopyRows(src, ldb, dst, nr, kc, cols);
            }
        }
    }

    /// <summary>dst[p, 0 .. width) = src[p, 0 .. count) then zeros, for p in [0, steps); src row stride ld.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void CopyRows<T>(T* src, nint ld, T* dst, int width, int steps, int count)
        where T : unmanaged, INumber<T>
    {
        nint bytes = (nint)count * sizeof(T);
        for (int p = 0; p < steps; p++, src += ld, dst += width)
        {
            Unsafe.CopyBlockUnaligned(dst, src, (uint)bytes);
            for (int j = count; j < width; j++) dst[j] = T.Zero;
        }
    }

    /// <summary>
    /// dst[p, r] = src[r, p] for r in [0, count), zeros for r in [count, width), p in [0, steps);
    /// src row stride ld, dst row stride width.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Transpose<T>(T* src, nint ld, T* dst, int width, int count, int steps)
        where T : unmanaged, INumber<T>
    {
        for (int r = 0; r < count; r++)
        {
            T* s = src + r * ld;
            T* d = dst + r;
            for (int p = 0; p < steps; p++, d += width) *d = s[p];
        }
        for (int r = count; r < width; r++)
        {
            T* d = dst + r;
            for (int p = 0; p < steps; p++, d += width) *d = T.Zero;
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
