// TEMPORARY stand-ins until the kernel branches merge.
using System.Numerics;
namespace Phi2Native.Backends.Cpu;
internal static class CpuGemm {
  public static void Gemm(bool ta, bool tb, int m, int n, int k, float alpha, ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb, float beta, Span<float> c, int ldc) => throw new Exception();
  public static void Gemm(bool ta, bool tb, int m, int n, int k, double alpha, ReadOnlySpan<double> a, int lda, ReadOnlySpan<double> b, int ldb, double beta, Span<double> c, int ldc) => throw new Exception();
}
internal static class CpuEmbedding { public static void Forward<T>(ReadOnlySpan<T> w, ReadOnlySpan<int> ids, Span<T> o, int v, int c) where T: unmanaged, IFloatingPointIeee754<T> => throw new Exception();
 public static void Backward<T>(ReadOnlySpan<T> d, ReadOnlySpan<int> ids, Span<T> dw, int v, int c) where T: unmanaged, IFloatingPointIeee754<T> => throw new Exception(); }
internal static class CpuLayerNorm { public static void Forward<T>(ReadOnlySpan<T> x, ReadOnlySpan<T> w, ReadOnlySpan<T> b, double eps, Span<T> y, Span<T> m, Span<T> r, int rows, int c) where T: unmanaged, IFloatingPointIeee754<T> => throw new Exception();
 public static void Backward<T>(ReadOnlySpan<T> dy, ReadOnlySpan<T> x, ReadOnlySpan<T> w, ReadOnlySpan<T> m, ReadOnlySpan<T> r, Span<T> dx, Span<T> dw, Span<T> db, int rows, int c) where T: unmanaged, IFloatingPointIeee754<T> => throw new Exception(); }
internal static class CpuRotary { public static void Forward<T>(ReadOnlySpan<T> x, Span<T> y, int b, int t, int h, int d, int rd, double th, int off) where T: unmanaged, IFloatingPointIeee754<T> => throw new Exception();
 public static void Backward<T>(ReadOnlySpan<T> x, Span<T> y, int b, int t, int h, int d, int rd, double th, int off) where T: unmanaged, IFloatingPointIeee754<T> => throw new Exception(); }
internal static class CpuAttention { public static void Forward<T>(ReadOnlySpan<T> q, ReadOnlySpan<T> k, ReadOnlySpan<T> v, Span<T> o, Span<T> l, int b, int tq, int tk, int h, int d) where T: unmanaged, IFloatingPointIeee754<T> => throw new Exception();
 public static void Backward<T>(ReadOnlySpan<T> dO, ReadOnlySpan<T> q, ReadOnlySpan<T> k, ReadOnlySpan<T> v, ReadOnlySpan<T> o, ReadOnlySpan<T> l, Span<T> dq, Span<T> dk, Span<T> dv, int b, int tq, int tk, int h, int d) where T: unmanaged, IFloatingPointIeee754<T> => throw new Exception(); }
internal static class CpuGelu { public static void Forward<T>(ReadOnlySpan<T> x, Span<T> y) where T: unmanaged, IFloatingPointIeee754<T> => throw new Exception();
 public static void Backward<T>(ReadOnlySpan<T> dy, ReadOnlySpan<T> x, Span<T> dx) where T: unmanaged, IFloatingPointIeee754<T> => throw new Exception(); }
internal static class CpuDropout { public static void Forward<T>(ReadOnlySpan<T> x, Span<T> y, double p, ulong s) where T: unmanaged, IFloatingPointIeee754<T> => throw new Exception();
 public static void Backward<T>(ReadOnlySpan<T> dy, Span<T> dx, double p, ulong s) where T: unmanaged, IFloatingPointIeee754<T> => throw new Exception(); }
internal static class CpuCrossEntropy { public static (double, int) Forward<T>(ReadOnlySpan<T> lg, ReadOnlySpan<int> t, Span<T> l, int n, int v, int ig) where T: unmanaged, IFloatingPointIeee754<T> => throw new Exception();
 public static void Backward<T>(ReadOnlySpan<T> lg, ReadOnlySpan<int> t, ReadOnlySpan<T> l, double s, Span<T> d, int n, int v, int ig) where T: unmanaged, IFloatingPointIeee754<T> => throw new Exception(); }
