using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Phi2Native.Backends.Cpu;

// Register-blocked microkernels of the CPU GEMM (BLIS terminology).
//
// A microkernel computes one MR x NR tile of C from two packed micro-panels:
//   a: [kc, MR]  column p holds op(A)[i0 .. i0+MR, p], contiguous (MR scalars per k step)
//   b: [kc, NR]  row p holds op(B)[p, j0 .. j0+NR], contiguous (NR scalars per k step)
//   c: MR rows of NR scalars, row stride ldc
// and stores C = alpha * (a . b) + beta * C, where beta == 0 overwrites C without reading it
// (C may hold NaN). Each k step is MR broadcasts of a, NR / lanes vector loads of b and
// MR * NR / lanes FMAs into accumulators that live in registers for the whole kc loop.
//
// Sizing on Zen 4 (the machine this was tuned on): 32 zmm registers; 512-bit FMAs issue one per
// cycle (two 256-bit pipes), latency 4. 12 x 32 floats = 24 zmm accumulators + 2 for b keeps
// 24 independent FMA chains in flight (>= 4 needed) with 2 loads + 12 broadcasts per 24 FMAs.
// On its own (L1-resident panels, `Phi2Native.Bench gemm-kernel`) it runs at 99.8% of a core's
// peak; RyuJIT keeps all 24 accumulators in zmm registers (checked with DOTNET_JitDisasm).

/// <summary>
/// One register-blocked microkernel: its tile shape, its cache blocking and the tile update itself.
/// Implemented by structs so that the generic driver is specialised (and the calls inlined) per kernel.
/// </summary>
internal unsafe interface IGemmKernel<T> where T : unmanaged, INumber<T>
{
    /// <summary>Rows of C per tile (height of a packed A micro-panel).</summary>
    static abstract int MR { get; }

    /// <summary>Columns of C per tile (width of a packed B micro-panel).</summary>
    static abstract int NR { get; }

    /// <summary>Depth of one packed panel pair (the k block): an MR x KC and a KC x NR panel stay in L1/L2.</summary>
    static abstract int KC { get; }

    /// <summary>Rows of A packed at once: the MC x KC block of A is reused from L2 across the whole B panel.</summary>
    static abstract int MC { get; }

    /// <summary>Columns of B packed at once: the KC x NC panel of B is reused from L2/L3 across all of M.</summary>
    static abstract int NC { get; }

    /// <summary>True when this process can run the kernel at full speed (the SIMD width and FMA it uses are in hardware).</summary>
    static abstract bool IsSupported { get; }

    /// <summary>C[MR, NR] (row stride <paramref name="ldc"/>) = alpha * a[kc, MR]^T . b[kc, NR] + beta * C; beta == 0 does not read C.</summary>
    static abstract void Run(int kc, T* a, T* b, T* c, nint ldc, T alpha, T beta);
}

/// <summary>Fused multiply-add on vectors of a generic element type; the type tests fold away at JIT time.</summary>
internal static class VectorFma
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<T> Fma<T>(Vector512<T> x, Vector512<T> y, Vector512<T> z) where T : unmanaged
    {
        if (typeof(T) == typeof(float))
            return Vector512.FusedMultiplyAdd(x.AsSingle(), y.AsSingle(), z.AsSingle()).As<float, T>();
        if (typeof(T) == typeof(double))
            return Vector512.FusedMultiplyAdd(x.AsDouble(), y.AsDouble(), z.AsDouble()).As<double, T>();
        return x * y + z;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<T> Fma<T>(Vector256<T> x, Vector256<T> y, Vector256<T> z) where T : unmanaged
    {
        if (typeof(T) == typeof(float))
            return Vector256.FusedMultiplyAdd(x.AsSingle(), y.AsSingle(), z.AsSingle()).As<float, T>();
        if (typeof(T) == typeof(double))
            return Vector256.FusedMultiplyAdd(x.AsDouble(), y.AsDouble(), z.AsDouble()).As<double, T>();
        return x * y + z;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<T> Fma<T>(Vector<T> x, Vector<T> y, Vector<T> z) where T : unmanaged
    {
        if (typeof(T) == typeof(float))
            return Vector.FusedMultiplyAdd(x.As<T, float>(), y.As<T, float>(), z.As<T, float>()).As<float, T>();
        if (typeof(T) == typeof(double))
            return Vector.FusedMultiplyAdd(x.As<T, double>(), y.As<T, double>(), z.As<T, double>()).As<double, T>();
        return x * y + z;
    }
}

/// <summary>
/// AVX-512 kernel: 12 x (2 x Vector512) tile, i.e. 12 x 32 for float and 12 x 16 for double;
/// 24 zmm accumulators.
/// </summary>
internal readonly unsafe struct Vector512Kernel<T> : IGemmKernel<T> where T : unmanaged, INumber<T>
{
    public static int MR => 12;
    public static int NR => 2 * Vector512<T>.Count;
    // Tuned on Zen 4 (single core, 512x2560x2560 x.W^T and 1024^3): KC 192..384 and MC 72..288 are
    // within noise of each other; NC 512 (B panel 512 KB, half of L2) beats 4096 by ~5%.
    public static int KC => 256;
    public static int MC => 144;
    public static int NC => 512;
    public static bool IsSupported => Vector512.IsHardwareAccelerated && Avx512F.IsSupported;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Run(int kc, T* a, T* b, T* c, nint ldc, T alpha, T beta)
    {
        int lanes = Vector512<T>.Count;
        Vector512<T> c0a = default, c0b = default, c1a = default, c1b = default, c2a = default, c2b = default;
        Vector512<T> c3a = default, c3b = default, c4a = default, c4b = default, c5a = default, c5b = default;
        Vector512<T> c6a = default, c6b = default, c7a = default, c7b = default, c8a = default, c8b = default;
        Vector512<T> c9a = default, c9b = default, cAa = default, cAb = default, cBa = default, cBb = default;
        for (int p = 0; p < kc; p++)
        {
            Vector512<T> b0 = Vector512.Load(b), b1 = Vector512.Load(b + lanes);
            Vector512<T> x;
            x = Vector512.Create(a[0]); c0a = VectorFma.Fma(x, b0, c0a); c0b = VectorFma.Fma(x, b1, c0b);
            x = Vector512.Create(a[1]); c1a = VectorFma.Fma(x, b0, c1a); c1b = VectorFma.Fma(x, b1, c1b);
            x = Vector512.Create(a[2]); c2a = VectorFma.Fma(x, b0, c2a); c2b = VectorFma.Fma(x, b1, c2b);
            x = Vector512.Create(a[3]); c3a = VectorFma.Fma(x, b0, c3a); c3b = VectorFma.Fma(x, b1, c3b);
            x = Vector512.Create(a[4]); c4a = VectorFma.Fma(x, b0, c4a); c4b = VectorFma.Fma(x, b1, c4b);
            x = Vector512.Create(a[5]); c5a = VectorFma.Fma(x, b0, c5a); c5b = VectorFma.Fma(x, b1, c5b);
            x = Vector512.Create(a[6]); c6a = VectorFma.Fma(x, b0, c6a); c6b = VectorFma.Fma(x, b1, c6b);
            x = Vector512.Create(a[7]); c7a = VectorFma.Fma(x, b0, c7a); c7b = VectorFma.Fma(x, b1, c7b);
            x = Vector512.Create(a[8]); c8a = VectorFma.Fma(x, b0, c8a); c8b = VectorFma.Fma(x, b1, c8b);
            x = Vector512.Create(a[9]); c9a = VectorFma.Fma(x, b0, c9a); c9b = VectorFma.Fma(x, b1, c9b);
            x = Vector512.Create(a[10]); cAa = VectorFma.Fma(x, b0, cAa); cAb = VectorFma.Fma(x, b1, cAb);
            x = Vector512.Create(a[11]); cBa = VectorFma.Fma(x, b0, cBa); cBb = VectorFma.Fma(x, b1, cBb);
            a += 12;
            b += 2 * lanes;
        }

        Vector512<T> va = Vector512.Create(alpha);
        if (beta == T.Zero)
        {
            Put(c + 0 * ldc, c0a, c0b, va); Put(c + 1 * ldc, c1a, c1b, va); Put(c + 2 * ldc, c2a, c2b, va);
            Put(c + 3 * ldc, c3a, c3b, va); Put(c + 4 * ldc, c4a, c4b, va); Put(c + 5 * ldc, c5a, c5b, va);
            Put(c + 6 * ldc, c6a, c6b, va); Put(c + 7 * ldc, c7a, c7b, va); Put(c + 8 * ldc, c8a, c8b, va);
            Put(c + 9 * ldc, c9a, c9b, va); Put(c + 10 * ldc, cAa, cAb, va); Put(c + 11 * ldc, cBa, cBb, va);
        }
        else
        {
            Vector512<T> vb = Vector512.Create(beta);
            Update(c + 0 * ldc, c0a, c0b, va, vb); Update(c + 1 * ldc, c1a, c1b, va, vb); Update(c + 2 * ldc, c2a, c2b, va, vb);
            Update(c + 3 * ldc, c3a, c3b, va, vb); Update(c + 4 * ldc, c4a, c4b, va, vb); Update(c + 5 * ldc, c5a, c5b, va, vb);
            Update(c + 6 * ldc, c6a, c6b, va, vb); Update(c + 7 * ldc, c7a, c7b, va, vb); Update(c + 8 * ldc, c8a, c8b, va, vb);
            Update(c + 9 * ldc, c9a, c9b, va, vb); Update(c + 10 * ldc, cAa, cAb, va, vb); Update(c + 11 * ldc, cBa, cBb, va, vb);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Put(T* row, Vector512<T> x0, Vector512<T> x1, Vector512<T> va)
    {
        (x0 * va).Store(row);
        (x1 * va).Store(row + Vector512<T>.Count);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Update(T* row, Vector512<T> x0, Vector512<T> x1, Vector512<T> va, Vector512<T> vb)
    {
        T* row1 = row + Vector512<T>.Count;
        VectorFma.Fma(x0, va, vb * Vector512.Load(row)).Store(row);
        VectorFma.Fma(x1, va, vb * Vector512.Load(row1)).Store(row1);
    }
}

/// <summary>
/// AVX2 + FMA kernel: 6 x (2 x Vector256) tile, i.e. 6 x 16 for float and 6 x 8 for double;
/// 12 ymm accumulators of the 16 registers.
/// </summary>
internal readonly unsafe struct Vector256Kernel<T> : IGemmKernel<T> where T : unmanaged, INumber<T>
{
    public static int MR => 6;
    public static int NR => 2 * Vector256<T>.Count;
    public static int KC => 256;
    public static int MC => 144;
    public static int NC => 512;
    public static bool IsSupported => Vector256.IsHardwareAccelerated && Fma.IsSupported;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Run(int kc, T* a, T* b, T* c, nint ldc, T alpha, T beta)
    {
        int lanes = Vector256<T>.Count;
        Vector256<T> c0a = default, c0b = default, c1a = default, c1b = default, c2a = default, c2b = default;
        Vector256<T> c3a = default, c3b = default, c4a = default, c4b = default, c5a = default, c5b = default;
        for (int p = 0; p < kc; p++)
        {
            Vector256<T> b0 = Vector256.Load(b), b1 = Vector256.Load(b + lanes);
            Vector256<T> x;
            x = Vector256.Create(a[0]); c0a = VectorFma.Fma(x, b0, c0a); c0b = VectorFma.Fma(x, b1, c0b);
            x = Vector256.Create(a[1]); c1a = VectorFma.Fma(x, b0, c1a); c1b = VectorFma.Fma(x, b1, c1b);
            x = Vector256.Create(a[2]); c2a = VectorFma.Fma(x, b0, c2a); c2b = VectorFma.Fma(x, b1, c2b);
            x = Vector256.Create(a[3]); c3a = VectorFma.Fma(x, b0, c3a); c3b = VectorFma.Fma(x, b1, c3b);
            x = Vector256.Create(a[4]); c4a = VectorFma.Fma(x, b0, c4a); c4b = VectorFma.Fma(x, b1, c4b);
            x = Vector256.Create(a[5]); c5a = VectorFma.Fma(x, b0, c5a); c5b = VectorFma.Fma(x, b1, c5b);
            a += 6;
            b += 2 * lanes;
        }

        Vector256<T> va = Vector256.Create(alpha);
        if (beta == T.Zero)
        {
            Put(c + 0 * ldc, c0a, c0b, va); Put(c + 1 * ldc, c1a, c1b, va); Put(c + 2 * ldc, c2a, c2b, va);
            Put(c + 3 * ldc, c3a, c3b, va); Put(c + 4 * ldc, c4a, c4b, va); Put(c + 5 * ldc, c5a, c5b, va);
        }
        else
        {
            Vector256<T> vb = Vector256.Create(beta);
            Update(c + 0 * ldc, c0a, c0b, va, vb); Update(c + 1 * ldc, c1a, c1b, va, vb); Update(c + 2 * ldc, c2a, c2b, va, vb);
            Update(c + 3 * ldc, c3a, c3b, va, vb); Update(c + 4 * ldc, c4a, c4b, va, vb); Update(c + 5 * ldc, c5a, c5b, va, vb);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Put(T* row, Vector256<T> x0, Vector256<T> x1, Vector256<T> va)
    {
        (x0 * va).Store(row);
        (x1 * va).Store(row + Vector256<T>.Count);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Update(T* row, Vector256<T> x0, Vector256<T> x1, Vector256<T> va, Vector256<T> vb)
    {
        T* row1 = row + Vector256<T>.Count;
        VectorFma.Fma(x0, va, vb * Vector256.Load(row)).Store(row);
        VectorFma.Fma(x1, va, vb * Vector256.Load(row1)).Store(row1);
    }
}

/// <summary>
/// Portable kernel for any host (ARM64, x64 without FMA): 4 x (2 x Vector&lt;T&gt;) tile with
/// <c>Vector.FusedMultiplyAdd</c>, which is exact-rounded even where the hardware lacks FMA.
/// </summary>
internal readonly unsafe struct PortableKernel<T> : IGemmKernel<T> where T : unmanaged, INumber<T>
{
    public static int MR => 4;
    public static int NR => 2 * Vector<T>.Count;
    public static int KC => 256;
    public static int MC => 144;
    public static int NC => 512;
    public static bool IsSupported => true;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Run(int kc, T* a, T* b, T* c, nint ldc, T alpha, T beta)
    {
        int lanes = Vector<T>.Count;
        Vector<T> c0a = default, c0b = default, c1a = default, c1b = default;
        Vector<T> c2a = default, c2b = default, c3a = default, c3b = default;
        for (int p = 0; p < kc; p++)
        {
            Vector<T> b0 = Vector.Load(b), b1 = Vector.Load(b + lanes);
            Vector<T> x;
            x = new Vector<T>(a[0]); c0a = VectorFma.Fma(x, b0, c0a); c0b = VectorFma.Fma(x, b1, c0b);
            x = new Vector<T>(a[1]); c1a = VectorFma.Fma(x, b0, c1a); c1b = VectorFma.Fma(x, b1, c1b);
            x = new Vector<T>(a[2]); c2a = VectorFma.Fma(x, b0, c2a); c2b = VectorFma.Fma(x, b1, c2b);
            x = new Vector<T>(a[3]); c3a = VectorFma.Fma(x, b0, c3a); c3b = VectorFma.Fma(x, b1, c3b);
            a += 4;
            b += 2 * lanes;
        }

        var va = new Vector<T>(alpha);
        var vb = new Vector<T>(beta);
        bool overwrite = beta == T.Zero;
        Store(c + 0 * ldc, c0a, c0b, va, vb, overwrite);
        Store(c + 1 * ldc, c1a, c1b, va, vb, overwrite);
        Store(c + 2 * ldc, c2a, c2b, va, vb, overwrite);
        Store(c + 3 * ldc, c3a, c3b, va, vb, overwrite);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(T* row, Vector<T> x0, Vector<T> x1, Vector<T> va, Vector<T> vb, bool overwrite)
    {
        T* row1 = row + Vector<T>.Count;
        if (overwrite)
        {
            (x0 * va).Store(row);
            (x1 * va).Store(row1);
        }
        else
        {
            VectorFma.Fma(x0, va, vb * Vector.Load(row)).Store(row);
            VectorFma.Fma(x1, va, vb * Vector.Load(row1)).Store(row1);
        }
    }
}
