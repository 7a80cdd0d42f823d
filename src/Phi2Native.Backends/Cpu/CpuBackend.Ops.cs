using Phi2Native.Tensors;

namespace Phi2Native.Backends.Cpu;

// The differentiable ops: shape checks and dtype dispatch here; the math lives in the Cpu{Op} kernels.
public sealed partial class CpuBackend
{
    internal static Span<T> Optional<T>(Tensor? tensor) where T : unmanaged => tensor is null ? default : Span<T>(tensor);

    private static void RequireRank(Tensor tensor, int rank, string what)
    {
        if (tensor.Rank != rank) throw new ArgumentException($"{what}: expected rank {rank}, got [{tensor.ShapeText}]");
    }

    private static void RequireVector(Tensor tensor, int length, string what)
    {
        if (tensor.Rank != 1 || tensor.Size(0) != length) throw new ArgumentException($"{what}: expected [{length}], got [{tensor.ShapeText}]");
    }

    private static void RequireIds(Tensor ids, string what)
    {
        if (ids.DType != DType.I32) throw new ArgumentException($"{what}: expected I32 ids, got {ids.DType}");
    }
}
