using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace Phi2Native.Backends.Cpu;

/// <summary>Which microkernel a product runs on; <see cref="Auto"/> picks the widest the hardware accelerates.</summary>
/// <remarks>Exists so that tests and the benchmark can pin each kernel on one machine.</remarks>
internal enum GemmKernelKind
{
    /// <summary>Vector512 if accelerated, else Vector256 with FMA, else portable.</summary>
    Auto,
    /// <summary>AVX-512: 12 x 32 float / 12 x 16 double tiles.</summary>
    Vector512,
    /// <summary>AVX2 + FMA: 6 x 16 float / 6 x 8 double tiles.</summary>
    Vector256,
    /// <summary><see cref="System.Numerics.Vector{T}"/>: 4 x 2 vectors, any hardware.</summary>
    Portable,
}

/// <summary>
/// Dense matrix multiply of the managed CPU backend, with BLAS semantics on row-major storage:
/// C[m, n] = alpha * op(A)[m, k] * op(B)[k, n] + beta * C.
/// </summary>
/// <remarks>
/// <para>Storage, all row-major: A is [m, lda &gt;= k], or with <c>transposeA</c> [k, lda &gt;= m];
/// B is [k, ldb &gt;= n], or with <c>transposeB</c> [n, ldb &gt;= k] (a Linear weight [out, in] is
/// B transposed); C is [m, ldc &gt;= n]. Elements beyond a row's width (up to the leading dimension)
/// are neither read from A and B nor written in C.</para>
/// <para>beta == 0 overwrites C without reading it (C may hold NaN or garbage); k == 0 or
/// alpha == 0 gives C = beta * C without reading A or B.</para>
/// <para>Large products use every core (<see cref="Parallel"/>); small ones run on the calling
/// thread and allocate nothing. Packing memory is per thread (pinned, at most MC x KC + KC x NC +
/// MR x NR elements: about 0.7 MB for float, 1.3 MB for double) and kept for the thread's lifetime.</para>
/// </remarks>
internal static unsafe partial class CpuGemm
{
    /// <summary>C = alpha * op(A) * op(B) + beta * C in single precision (see the class remarks for layouts).</summary>
    /// <param name="transposeA">Use A^T: A is stored [k, lda].</param>
    /// <param name="transposeB">Use B^T: B is stored [n, ldb].</param>
    /// <param name="m">Rows of C and of op(A).</param>
    /// <param name="n">Columns of C and of op(B).</param>
    /// <param name="k">Columns of op(A), rows of op(B).</param>
    /// <param name="alpha">Scale of the product.</param>
    /// <param name="a">A's elements, row-major.</param>
    /// <param name="lda">Row stride of A in elements.</param>
    /// <param name="b">B's elements, row-major.</param>
    /// <param name="ldb">Row stride of B in elements.</param>
    /// <param name="beta">Scale of C's old contents; 0 means C is not read.</param>
    /// <param name="c">C's elements, row-major; must not overlap A or B.</param>
    /// <param name="ldc">Row stride of C in elements.</param>
    /// <exception cref="ArgumentOutOfRangeException">A dimension is negative or a leading dimension is smaller than its row width.</exception>
    /// <exception cref="ArgumentException">A span is too short for its dimensions, or C overlaps A or B.</exception>
    public static void Gemm(bool transposeA, bool transposeB, int m, int n, int k, float alpha, ReadOnlySpan<float> a, int lda,
        ReadOnlySpan<float> b, int ldb, float beta, Span<float> c, int ldc)
        => Batched(GemmKernelKind.Auto, int.MaxValue, transposeA, transposeB, m, n, k, alpha, a, lda, 0, b, ldb, 0, beta, c, ldc, 0, 1);

    /// <summary>C = alpha * op(A) * op(B) + beta * C in double precision (used by finite-difference gradient checks).</summary>
    /// <inheritdoc cref="Gemm(bool, bool, int, int, int, float, ReadOnlySpan{float}, int, ReadOnlySpan{float}, int, float, Span{float}, int)"/>
    public static void Gemm(bool transposeA, bool transposeB, int m, int n, int k, double alpha, ReadOnlySpan<double> a, int lda,
        ReadOnlySpan<double> b, int ldb, double beta, Span<double> c, int ldc)
        => Batched(GemmKernelKind.Auto, int.MaxValue, transposeA, transposeB, m, n, k, alpha, a, lda, 0, b, ldb, 0, beta, c, ldc, 0, 1);

    /// <summary>
    /// C = op(A) * op(B) (=), or C += op(A) * op(B) with <paramref name="accumulate"/> (beta 1), for float or double T: the
    /// one entry of the callers whose bodies are generic over their element type.
    /// </summary>
    /// <inheritdoc cref="Gemm(bool, bool, int, int, int, float, ReadOnlySpan{float}, int, ReadOnlySpan{float}, int, float, Span{float}, int)"/>
    public static void Gemm<T>(bool transposeA, bool transposeB, int m, int n, int k, ReadOnlySpan<T> a, int lda, ReadOnlySpan<T> b, int ldb,
        bool accumulate, Span<T> c, int ldc) where T : unmanaged
    {
        if (typeof(T) == typeof(double))
            Gemm(transposeA, transposeB, m, n, k, 1.0, MemoryMarshal.Cast<T, double>(a), lda, MemoryMarshal.Cast<T, double>(b), ldb,
                accumulate ? 1.0 : 0.0, MemoryMarshal.Cast<T, double>(c), ldc);
        else if (typeof(T) == typeof(float))
            Gemm(transposeA, transposeB, m, n, k, 1f, MemoryMarshal.Cast<T, float>(a), lda, MemoryMarshal.Cast<T, float>(b), ldb,
                accumulate ? 1f : 0f, MemoryMarshal.Cast<T, float>(c), ldc);
        else throw new NotSupportedException($"CpuGemm multiplies float or double, not {typeof(T).Name}");
    }

    /// <summary>
    /// <paramref name="batchCount"/> independent products, like cuBLAS's strided-batched GEMM: product i uses
    /// A at <c>a[i * strideA..]</c>, B at <c>b[i * strideB..]</c> and C at <c>c[i * strideC..]</c>, with the
    /// layouts and semantics of <see cref="Gemm(bool, bool, int, int, int, float, ReadOnlySpan{float}, int, ReadOnlySpan{float}, int, float, Span{float}, int)"/>.
    /// </summary>
    /// <remarks>
    /// A stride of 0 shares one A or B across the batch. The C matrices must not share elements:
    /// either <c>strideC</c> covers a whole C, or they interleave within rows
    /// (<c>strideC &gt;= n</c> and <c>(batchCount - 1) * strideC + n &lt;= ldc</c>), e.g. attention heads
    /// written into [T, heads * headDim] with strideC = headDim.
    /// </remarks>
    /// <param name="transposeA">Use A^T: each A is stored [k, lda].</param>
    /// <param name="transposeB">Use B^T: each B is stored [n, ldb].</param>
    /// <param name="m">Rows of each C and op(A).</param>
    /// <param name="n">Columns of each C and op(B).</param>
    /// <param name="k">Columns of op(A), rows of op(B).</param>
    /// <param name="alpha">Scale of the products.</param>
    /// <param name="a">All A matrices, row-major.</param>
    /// <param name="lda">Row stride of each A in elements.</param>
    /// <param name="strideA">Elements between consecutive A matrices (&gt;= 0).</param>
    /// <param name="b">All B matrices, row-major.</param>
    /// <param name="ldb">Row stride of each B in elements.</param>
    /// <param name="strideB">Elements between consecutive B matrices (&gt;= 0).</param>
    /// <param name="beta">Scale of C's old contents; 0 means C is not read.</param>
    /// <param name="c">All C matrices, row-major; must not overlap A or B.</param>
    /// <param name="ldc">Row stride of each C in elements.</param>
    /// <param name="strideC">Elements between consecutive C matrices (&gt;= 0).</param>
    /// <param name="batchCount">Number of products (&gt;= 0).</param>
    /// <exception cref="ArgumentOutOfRangeException">A dimension, stride or count is negative, or a leading dimension is too small.</exception>
    /// <exception cref="ArgumentException">A span is too short for the batch, C matrices overlap each other, or C overlaps A or B.</exception>
    public static void GemmBatched(bool transposeA, bool transposeB, int m, int n, int k, float alpha,
        ReadOnlySpan<float> a, int lda, int strideA, ReadOnlySpan<float> b, int ldb, int strideB,
        float beta, Span<float> c, int ldc, int strideC, int batchCount)
        => Batched(GemmKernelKind.Auto, int.MaxValue, transposeA, transposeB, m, n, k, alpha, a, lda, strideA, b, ldb, strideB,
            beta, c, ldc, strideC, batchCount);

    /// <summary>Double-precision <see cref="GemmBatched(bool, bool, int, int, int, float, ReadOnlySpan{float}, int, int, ReadOnlySpan{float}, int, int, float, Span{float}, int, int, int)"/>.</summary>
    /// <inheritdoc cref="GemmBatched(bool, bool, int, int, int, float, ReadOnlySpan{float}, int, int, ReadOnlySpan{float}, int, int, float, Span{float}, int, int, int)"/>
    public static void GemmBatched(bool transposeA, bool transposeB, int m, int n, int k, double alpha,
        ReadOnlySpan<double> a, int lda, int strideA, ReadOnlySpan<double> b, int ldb, int strideB,
        double beta, Span<double> c, int ldc, int strideC, int batchCount)
        => Batched(GemmKernelKind.Auto, int.MaxValue, transposeA, transposeB, m, n, k, alpha, a, lda, strideA, b, ldb, strideB,
            beta, c, ldc, strideC, batchCount);

    /// <summary>
    /// The one implementation behind the public entry points, with the kernel and the thread cap
    /// exposed so that tests can pin each kernel and the serial path.
    /// </summary>
    internal static void Batched<T>(GemmKernelKind kernel, int maxThreads, bool transposeA, bool transposeB, int m, int n, int k,
        T alpha, ReadOnlySpan<T> a, int lda, int strideA, ReadOnlySpan<T> b, int ldb, int strideB,
        T beta, Span<T> c, int ldc, int strideC, int batchCount)
        where T : unmanaged, INumber<T>
    {
        Validate(transposeA, transposeB, m, n, k, a, lda, strideA, b, ldb, strideB, c, ldc, strideC, batchCount);
        if (batchCount == 0 || m == 0 || n == 0) return;

        fixed (T* pa = a, pb = b, pc = c)
        {
            if (k == 0 || alpha == T.Zero)
            {
                for (int i = 0; i < batchCount; i++) ScaleC(m, n, beta, pc + (nint)i * strideC, ldc);
                return;
            }
            var p = new Product<T>
            {
                TransA = transposeA, TransB = transposeB, M = m, N = n, K = k, Alpha = alpha, Beta = beta,
                A = pa, Lda = lda, StrideA = strideA, B = pb, Ldb = ldb, StrideB = strideB, C = pc, Ldc = ldc, StrideC = strideC,
                BatchCount = batchCount, MaxThreads = Math.Max(1, maxThreads),
            };
            switch (Resolve<T>(kernel))
            {
                case GemmKernelKind.Vector512: RunBatch<T, Vector512Kernel<T>>(p); break;
                case GemmKernelKind.Vector256: RunBatch<T, Vector256Kernel<T>>(p); break;
                default: RunBatch<T, PortableKernel<T>>(p); break;
            }
        }
    }

    /// <summary>The kernel <paramref name="kind"/> stands for on this machine (<see cref="GemmKernelKind.Auto"/> resolved).</summary>
    internal static GemmKernelKind Resolve<T>(GemmKernelKind kind) where T : unmanaged, INumber<T> => kind switch
    {
        GemmKernelKind.Auto when Vector512Kernel<T>.IsSupported => GemmKernelKind.Vector512,
        GemmKernelKind.Auto when Vector256Kernel<T>.IsSupported => GemmKernelKind.Vector256,
        GemmKernelKind.Auto => GemmKernelKind.Portable,
        _ => kind,
    };

    /// <summary>True when <paramref name="kind"/> runs at hardware speed here (false: it would run, emulated in software).</summary>
    internal static bool IsAccelerated<T>(GemmKernelKind kind) where T : unmanaged, INumber<T> => Resolve<T>(kind) switch
    {
        GemmKernelKind.Vector512 => Vector512Kernel<T>.IsSupported,
        GemmKernelKind.Vector256 => Vector256Kernel<T>.IsSupported,
        _ => true,
    };

    /// <summary>A validated batched product as raw pointers (the spans are pinned by the caller for its duration).</summary>
    private struct Product<T> where T : unmanaged
    {
        public bool TransA, TransB;
        public int M, N, K, BatchCount, MaxThreads;
        public T Alpha, Beta;
        public T* A, B, C;
        public nint Lda, Ldb, Ldc, StrideA, StrideB, StrideC;
    }

    /// <summary>
    /// Runs every product of the batch. Many small products: one thread per product (each serial);
    /// otherwise one product after another, each split over the threads.
    /// </summary>
    private static void RunBatch<T, TK>(Product<T> p)
        where T : unmanaged, INumber<T> where TK : struct, IGemmKernel<T>
    {
        int threads = Math.Min(p.MaxThreads, Environment.ProcessorCount);
        long flops = 2L * p.M * p.N * p.K;
        if (p.BatchCount >= 2 * threads && threads > 1 && flops * p.BatchCount >= ParallelFlopThreshold)
        {
            var job = new BatchJob<T, TK> { P = p };
            Parallel.For(0, p.BatchCount, new ParallelOptions { MaxDegreeOfParallelism = threads }, job.Run);
            return;
        }
        for (int i = 0; i < p.BatchCount; i++)
        {
            Multiply<T, TK>(p.TransA, p.TransB, p.M, p.N, p.K, p.Alpha, p.A + i * p.StrideA, p.Lda, p.B + i * p.StrideB, p.Ldb,
                p.Beta, p.C + i * p.StrideC, p.Ldc, threads);
        }
    }

    /// <summary>Carries a batch into <see cref="Parallel.For(int, int, ParallelOptions, Action{int})"/>; one serial product per index.</summary>
    private sealed class BatchJob<T, TK> where T : unmanaged, INumber<T> where TK : struct, IGemmKernel<T>
    {
        public Product<T> P;

        public void Run(int i) => Blocked<T, TK>(P.TransA, P.TransB, P.M, P.N, P.K, P.Alpha, P.A + i * P.StrideA, P.Lda,
            P.B + i * P.StrideB, P.Ldb, P.Beta, P.C + i * P.StrideC, P.Ldc);
    }

    /// <summary>C[m, n] = beta * C; beta == 0 writes zeros without reading C.</summary>
    private static void ScaleC<T>(int m, int n, T beta, T* c, nint ldc) where T : unmanaged, INumber<T>
    {
        if (beta == T.One) return;
        for (int i = 0; i < m; i++)
        {
            var row = new Span<T>(c + i * ldc, n);
            if (beta == T.Zero) row.Clear();
            else TensorPrimitives.Multiply(row, beta, row);
        }
    }
}
