using System.Runtime.InteropServices;
using Phi2Native.Backends.Ops.Attention;
using Phi2Native.Backends.Ops.KvCache;
using Phi2Native.Backends.Ops.Rotary;
using Phi2Native.Tensors;

namespace Phi2Native.Tests.Support;

/// <summary>
/// The position-taking ops with every batch row at one position, the case most tests pin: the ops take I32 [B]
/// positions (rows of a KV cache may differ), and these build the uniform tensor on the input's backend.
/// </summary>
internal static class UniformPositions
{
    /// <summary>I32 [<paramref name="batch"/>] holding <paramref name="value"/> on <paramref name="backend"/>.</summary>
    public static Tensor Same(IBackend backend, int value, int batch)
    {
        int[] values = [.. Enumerable.Repeat(value, batch)];
        return backend.FromBytes(MemoryMarshal.AsBytes(values.AsSpan()), DType.I32, [batch], DType.I32);
    }

    /// <summary><see cref="RotaryOp.Forward"/> with every row at <paramref name="offset"/>.</summary>
    public static Tensor Rotary(Tensor x, int rotaryDim, double theta, int offset) =>
        RotaryOp.Forward(x, rotaryDim, theta, Same(x.Backend, offset, x.Size(0)));

    /// <summary><see cref="RotaryOp.Backward"/> with every row at <paramref name="offset"/>.</summary>
    public static void RotaryBackward(Tensor dOutput, Tensor dx, int rotaryDim, double theta, int offset) =>
        RotaryOp.Backward(dOutput, dx, rotaryDim, theta, Same(dOutput.Backend, offset, dOutput.Size(0)));

    /// <summary><see cref="KvCacheOp.Write"/> with every row at <paramref name="position"/>.</summary>
    public static void CacheWrite(Tensor source, Tensor cache, int position) =>
        KvCacheOp.Write(source, cache, Same(source.Backend, position, source.Size(0)));

    /// <summary><see cref="AttentionOp.Cached"/> with every row attending over <paramref name="keyTime"/> keys.</summary>
    public static Tensor CachedAttention(Tensor q, Tensor keyCache, Tensor valueCache, int keyTime) =>
        AttentionOp.Cached(q, keyCache, valueCache, Same(q.Backend, keyTime, q.Size(0)));
}
