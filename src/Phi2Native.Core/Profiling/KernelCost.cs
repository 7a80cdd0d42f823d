using Phi2Native.Tensors;

namespace Phi2Native.Profiling;

/// <summary>
/// What one launch costs, as its launcher declares it from its shapes: the bytes of device memory it must read and
/// write (each byte once: the compulsory traffic, what a cache cannot save) and its floating-point operations, split
/// into those done on tensor cores and those done by ordinary (SIMT) instructions. The roofline model
/// (<c>Phi2Native.Profiling.RooflineModel</c>) turns it into a modelled time; the emulator checks the bytes.
/// </summary>
/// <param name="BytesRead">Bytes of device memory read (each byte once).</param>
/// <param name="BytesWritten">Bytes of device memory written (each byte once).</param>
/// <param name="TensorCoreFlops">Flops done by tensor-core instructions (mma); a multiply-add is 2.</param>
/// <param name="SimtFlops">Flops done by ordinary instructions; a multiply-add is 2, a transcendental 1.</param>
public readonly record struct KernelCost(long BytesRead, long BytesWritten, long TensorCoreFlops, long SimtFlops)
{
    /// <summary>The cost of a launch whose launcher declared none (a new launcher not yet declared): -1 bytes.</summary>
    public static KernelCost Undeclared => new(-1, -1, 0, 0);

    /// <summary>Whether the launcher declared this cost.</summary>
    public bool IsDeclared => BytesRead >= 0;

    /// <summary>Bytes read plus bytes written.</summary>
    public long Bytes => Math.Max(BytesRead, 0) + Math.Max(BytesWritten, 0);

    /// <summary>Tensor-core plus SIMT flops.</summary>
    public long Flops => TensorCoreFlops + SimtFlops;

    /// <summary>
    /// An elementwise kernel over <paramref name="n"/> elements: <paramref name="inputs"/> arrays read and
    /// <paramref name="outputs"/> written, all of <paramref name="dtype"/>, and <paramref name="flopsPerElement"/> SIMT flops each.
    /// </summary>
    public static KernelCost Elementwise(long n, DType dtype, int inputs, int outputs, int flopsPerElement) =>
        new(n * inputs * dtype.SizeInBytes(), n * outputs * dtype.SizeInBytes(), 0, n * flopsPerElement);

    /// <summary>The sum of two costs (an op of several launches).</summary>
    public static KernelCost operator +(KernelCost a, KernelCost b) =>
        new(a.BytesRead + b.BytesRead, a.BytesWritten + b.BytesWritten, a.TensorCoreFlops + b.TensorCoreFlops, a.SimtFlops + b.SimtFlops);
}
