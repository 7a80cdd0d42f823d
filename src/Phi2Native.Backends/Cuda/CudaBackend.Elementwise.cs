using Phi2Native.Tensors;

namespace Phi2Native.Backends.Cuda;

// The element-wise plumbing of autograd and the optimizer: add, accumulate, scale, sum of squares, transpose.
// elementwise.cu computes in fp32 and rounds once on store, so F32 results equal the CPU backend's bit for bit.
public sealed partial class CudaBackend
{
    /// <inheritdoc/>
    public Tensor Add(Tensor a, Tensor b)
    {
        var pa = Pointer(a, nameof(a));
        var pb = Pointer(b, nameof(b));
        if (!a.Shape.SequenceEqual(b.Shape) || a.DType != b.DType)
            throw new ArgumentException($"Add: [{a.ShapeText}] {a.DType} and [{b.ShapeText}] {b.DType} differ");
        RequireDType(a, nameof(Add), nameof(a), DType.F32, DType.BF16, DType.F16);
        var result = Allocate(a.Shape, a.DType, nameof(a));
        if (a.ElementCount > 0) ElementwiseKernels.Add(_device, a.DType, pa, pb, Pointer(result, "result"), a.ElementCount, _stream);
        return result;
    }

    /// <inheritdoc/>
    public void AddInPlace(Tensor accumulator, Tensor value)
    {
        var pa = Pointer(accumulator, nameof(accumulator));
        var pv = Pointer(value, nameof(value));
        if (accumulator.ElementCount != value.ElementCount || accumulator.DType != value.DType)
            throw new ArgumentException($"cannot add [{value.ShapeText}] {value.DType} into [{accumulator.ShapeText}] {accumulator.DType}");
        RequireDType(accumulator, nameof(AddInPlace), nameof(accumulator), DType.F32, DType.BF16, DType.F16);
        // y = a + b with y = a: each thread reads its two elements before it writes one, so the alias is safe.
        if (accumulator.ElementCount > 0) ElementwiseKernels.Add(_device, accumulator.DType, pa, pv, pa, accumulator.ElementCount, _stream);
    }

    /// <inheritdoc/>
    /// <remarks>The factor is rounded to fp32 first, as the CPU backend rounds it.</remarks>
    public void ScaleInPlace(Tensor tensor, double factor)
    {
        var p = Pointer(tensor, nameof(tensor));
        RequireDType(tensor, nameof(ScaleInPlace), nameof(tensor), DType.F32, DType.BF16, DType.F16);
        if (tensor.ElementCount > 0) ElementwiseKernels.Scale(_device, tensor.DType, p, p, (float)factor, tensor.ElementCount, _stream);
    }

    /// <inheritdoc/>
    public Tensor Transpose(Tensor matrix)
    {
        var p = Pointer(matrix, nameof(matrix));
        if (matrix.Rank != 2) throw new ArgumentException($"Transpose: expected a matrix, got [{matrix.ShapeText}]", nameof(matrix));
        RequireDType(matrix, nameof(Transpose), nameof(matrix), DType.F32, DType.BF16);
        int rows = matrix.Size(0), columns = matrix.Size(1);
        var result = Allocate([columns, rows], matrix.DType, nameof(matrix));
        if (matrix.ElementCount > 0) TransposeKernels.Transpose(_device, matrix.DType, p, Pointer(result, "result"), rows, columns, _stream);
        return result;
    }
}
