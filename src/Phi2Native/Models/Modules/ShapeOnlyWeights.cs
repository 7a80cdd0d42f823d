using Phi2Native.Tensors;

namespace Phi2Native.Models.Modules;

/// <summary>
/// Parameters with their names, shapes and dtype but no memory, as torch's "meta" device: a model built from them is
/// its module tree and nothing else, so the structure of a model too large to load (Phi-2's 2.7B parameters) can be
/// walked from its config alone (the training plan, <c>phi2 layers</c>, the expected shapes of a checkpoint).
/// Nothing may compute with such a tensor: it has no storage a backend can read.
/// </summary>
internal static class ShapeOnlyWeights
{
    /// <summary>A weight source whose tensors are F32 of the asked shape over no memory; <paramref name="backend"/> is only their nominal owner.</summary>
    public static WeightSource For(IBackend backend) => (_, shape) => Create(backend, shape);

    /// <summary>An F32 tensor of <paramref name="shape"/> over no memory.</summary>
    public static Tensor Create(IBackend backend, int[] shape) =>
        new(backend, new NoStorage(Tensor.CountElements(shape) * DType.F32.SizeInBytes()), shape, DType.F32);

    /// <summary>Whether <paramref name="tensor"/> is one of these (its memory, or its root's, is none).</summary>
    public static bool IsShapeOnly(Tensor tensor) => tensor.Storage.Root is NoStorage;

    /// <summary>Claims the bytes a tensor of the shape would need, holds none, and frees nothing.</summary>
    private sealed class NoStorage(long byteLength) : TensorStorage
    {
        public override long ByteLength { get; } = byteLength;

        protected override void Release() { }
    }
}
