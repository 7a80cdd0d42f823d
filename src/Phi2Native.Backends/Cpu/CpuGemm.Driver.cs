using System.Numerics;
using System.Runtime.CompilerServices;

namespace Phi2Native.Backends.Cpu;

// The blocked driver (GotoBLAS / BLIS loop order) and its split over threads.
//
//   for jc in N step NC:                      B panel  [KC, NC]  packed once, reused for all of M (L2)
//     for pc in K step KC:                    beta applies on the first k block only
//       pack op(B)[pc:+KC, jc:+NC]
//       for ic in M step MC:                  A block  [MC, KC]  packed just before use, so it is hot in L2
//         pack op(A)[ic:+MC, pc:+KC]
//         for jr in NC step NR:               B micro-panel [KC, NR] reused across the MC rows (L1/L2)
//           for ir in MC step MR:             A micro-panel [MR, KC] streamed
//             kernel: C[ic+ir:+MR, jc+jr:+NR] = alpha * A . B + beta_k * C
//
// A is re-packed once per B panel (N / NC times). Packing all of A once per k block instead
// (it fits L2 for 512 tokens) measured 6% slower on Zen 4: the block then comes back from L3.
//
// Threads split C into independent tiles (no barriers, no shared packing): along N when n >= m
// (each thread packs only its columns of B and re-packs the smaller A), along M otherwise.
internal static unsafe partial class CpuGemm
{
    /// <summary>
    /// Products under this many flops (2 m n k, i.e. 128^3) run on the calling thread: about 40 us of
    /// one core, below which the hand-off to the thread pool costs about what it saves
    /// (measured on Zen 4: 100^3 runs at 72 GFLOP/s on one thread, 128^3 at 176 on two).
    /// </summary>
    internal const long ParallelFlopThreshold = 4L << 20;

    /// <summary>
    /// Output tiles per thread in a parallel product. One is ~2% faster on an idle machine; two let
    /// the other thread take over when a core is busy with something else (a shared machine, or
    /// the host's own threads), which costs a lot more than 2% when it happens.
    /// </summary>
    private const int TilesPerThread = 2;

    private static readonly ParallelOptions s_parallelOptions = new() { MaxDegreeOfParallelism = Environment.ProcessorCount };

    /// <summary>C = alpha op(A) op(B) + beta C over validated, non-empty operands (k &gt; 0, alpha != 0), multithreaded when large.</summary>
    private static void Multiply<T, TK>(bool ta, bool tb, int m, int n, int k, T alpha, T* a, nint lda, T* b, nint ldb,
        T beta, T* c, nint ldc, int maxThreads)
        where T : unmanaged, INumber<T> where TK : struct, IGemmKernel<T>
    {
        int threads = 2L * m * n * k < ParallelFlopThreshold ? 1 : Math.Min(maxThreads, Environment.ProcessorCount);
        if (threads <= 1)
        {
            Blocked<T, TK>(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
            return;
        }

        // Tile counts: prefer cutting the larger of M and N; never make a tile thinner than 4 micro-panels.
        int target = threads * TilesPerThread;
        int maxTilesM = Math.Max(1, m / (4 * TK.MR)), maxTilesN = Math.Max(1, n / (4 * TK.NR));
        int tilesM, tilesN;
        if (n >= m)
        {
            tilesN = Math.Min(target, maxTilesN);
            tilesM = Math.Min((target + tilesN - 1) / tilesN, maxTilesM);
        }
        else
        {
            tilesM = Math.Min(target, maxTilesM);
            tilesN = Math.Min((target + tilesM - 1) / tilesM, maxTilesN);
        }
        if (tilesM * tilesN <= 1)
        {
            Blocked<T, TK>(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
            return;
        }

        var job = new TileJob<T, TK>
        {
            TransA = ta, TransB = tb, M = m, N = n, K = k, Alpha = alpha, Beta = beta,
            A = (nint)a, Lda = lda, B = (nint)b, Ldb = ldb, C = (nint)c, Ldc = ldc,
            TilesN = tilesN,
            TileM = RoundUp((m + tilesM - 1) / tilesM, TK.MR),
            TileN = RoundUp((n + tilesN - 1) / tilesN, TK.NR),
        };
        var options = threads == Environment.ProcessorCount ? s_parallelOptions : new ParallelOptions { MaxDegreeOfParallelism = threads };
        Parallel.For(0, tilesM * tilesN, options, job.Run);
    }

    /// <summary>One parallel product: its operands (as addresses, so a delegate can carry them) and its tiling of C.</summary>
    private sealed class TileJob<T, TK> where T : unmanaged, INumber<T> where TK : struct, IGemmKernel<T>
    {
        public bool TransA, TransB;
        public int M, N, K, TilesN, TileM, TileN;
        public T Alpha, Beta;
        public nint A, Lda, B, Ldb, C, Ldc;

        /// <summary>Computes output tile <paramref name="index"/> (row-major over the tile grid) on the calling thread.</summary>
        public void Run(int index)
        {
            int i0 = index / TilesN * TileM, j0 = index % TilesN * TileN;
            if (i0 >= M || j0 >= N) return;
            int mt = Math.Min(TileM, M - i0), nt = Math.Min(TileN, N - j0);
            T* a = (T*)A + (TransA ? i0 : i0 * Lda);
            T* b = (T*)B + (TransB ? j0 * Ldb : j0);
            T* c = (T*)C + i0 * Ldc + j0;
            Blocked<T, TK>(TransA, TransB, mt, nt, K, Alpha, a, Lda, b, Ldb, Beta, c, Ldc);
        }
    }

    /// <summary>The single-threaded blocked product (loop nest above) of an m x n block of C.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Blocked<T, TK>(bool ta, bool tb, int m, int n, int k, T alpha, T* a, nint lda, T* b, nint ldb,
        T beta, T* c, nint ldc)
        where T : unmanaged, INumber<T> where TK : struct, IGemmKernel<T>
    {
        int mr = TK.MR, nr = TK.NR;
        int kcMax = Math.Min(TK.KC, k);
        int mcMax = Math.Min(TK.MC, RoundUp(m, mr));
        int ncMax = Math.Min(TK.NC, RoundUp(n, nr));
        PackBuffers<T>.Get((nint)RoundUp(mcMax, mr) * kcMax, (nint)RoundUp(ncMax, nr) * kcMax, mr * nr,
            out T* packA, out T* packB, out T* tile);

        for (int jc = 0; jc < n; jc += TK.NC)
        {
            int nc = Math.Min(TK.NC, n - jc);
            for (int pc = 0; pc < k; pc += TK.KC)
            {
                int kc = Math.Min(TK.KC, k - pc);
                T betaK = pc == 0 ? beta : T.One;
                PackB(tb, b, ldb, pc, jc, kc, nc, nr, packB);
                for (int ic = 0; ic < m; ic += TK.MC)
                {
                    int mc = Math.Min(TK.MC, m - ic);
                    PackA(ta, a, lda, ic, pc, mc, kc, mr, packA);
                    Macro<T, TK>(mc, nc, kc, alpha, betaK, packA, packB, c + ic * ldc + jc, ldc, tile);
                }
            }
        }
    }

    /// <summary>
    /// C[mc, nc] = alpha packA[mc, kc] . packB[kc, nc] + beta C: one kernel call per MR x NR tile;
    /// edge tiles go through <paramref name="tile"/> so that the padding never touches C.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Macro<T, TK>(int mc, int nc, int kc, T alpha, T beta, T* packA, T* packB, T* c, nint ldc, T* tile)
        where T : unmanaged, INumber<T> where TK : struct, IGemmKernel<T>
    {
        int mr = TK.MR, nr = TK.NR;
        for (int jr = 0; jr < nc; jr += nr)
        {
            int ncols = Math.Min(nr, nc - jr);
            T* bp = packB + (nint)jr * kc;
            for (int ir = 0; ir < mc; ir += mr)
            {
                int nrows = Math.Min(mr, mc - ir);
                T* ap = packA + (nint)ir * kc;
                T* cp = c + ir * ldc + jr;
                if (nrows == mr && ncols == nr)
                {
                    TK.Run(kc, ap, bp, cp, ldc, alpha, beta);
                }
                else
                {
                    TK.Run(kc, ap, bp, tile, nr, T.One, T.Zero);
                    MergeTile(nrows, ncols, tile, nr, alpha, beta, cp, ldc);
                }
            }
        }
    }

    /// <summary>C[rows, cols] = alpha tile + beta C (beta == 0: C not read).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void MergeTile<T>(int rows, int cols, T* tile, nint ldt, T alpha, T beta, T* c, nint ldc)
        where T : unmanaged, INumber<T>
    {
        for (int i = 0; i < rows; i++)
        {
            T* t = tile + i * ldt, row = c + i * ldc;
            if (beta == T.Zero)
                for (int j = 0; j < cols; j++) row[j] = alpha * t[j];
            else
                for (int j = 0; j < cols; j++) row[j] = alpha * t[j] + beta * row[j];
        }
    }

    private static int RoundUp(int x, int multiple) => (x + multiple - 1) / multiple * multiple;
}
