using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using System.Runtime.InteropServices;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Cpu;

/// <summary>
/// The managed CPU backend: fp32 compute (F64 for gradient checks), SIMD through System.Numerics.Tensors
/// and a cache-blocked GEMM, multithreaded. It is the reference the CUDA backend is checked against.
/// </summary>
/// <remarks>F16 and BF16 tensors can be stored and cast here, but ops compute in F32 or F64 only.</remarks>
public sealed unsafe partial class CpuBackend : IBackend
{
    private readonly CpuMemoryPool _pool;

    /// <summary>Creates the backend.</summary>
    /// <param name="poisonNewMemory">Fill <see cref="Empty"/> tensors with NaN so reads before writes show up (tests turn this on).</param>
    /// <param name="maxCachedBytes">Memory freed by tensors that is kept for reuse, at most (default 4 GiB).</param>
    public CpuBackend(bool poisonNewMemory = false, long maxCachedBytes = 4L << 30)
    {
        PoisonNewMemory = poisonNewMemory;
        _pool = new CpuMemoryPool(maxCachedBytes);
    }

    /// <summary>A shared instance without poisoning.</summary>
    public static CpuBackend Default { get; } = new();

    /// <summary>Whether new memory is filled with NaN.</summary>
    public bool PoisonNewMemory { get; }

    /// <inheritdoc/>
    public Device Device => Device.Cpu;

    /// <inheritdoc/>
    public MemoryStatistics Memory => _pool.Statistics;

    /// <inheritdoc/>
    public void ReleaseCachedMemory() => _pool.ReleaseCached();

    /// <inheritdoc/>
    public void ResetPeakMemory() => _pool.ResetPeak();

    /// <inheritdoc/>
    public Tensor Empty(ReadOnlySpan<int> shape, DType dtype)
    {
        var tensor = Allocate(shape, dtype);
        if (PoisonNewMemory && dtype.IsFloatingPoint()) FillNaN(tensor);
        return tensor;
    }

    /// <inheritdoc/>
    public Tensor Zeros(ReadOnlySpan<int> shape, DType dtype)
    {
        var tensor = Allocate(shape, dtype);
        Bytes(tensor).Clear();
        return tensor;
    }

    /// <inheritdoc/>
    public Tensor FromBytes(ReadOnlySpan<byte> data, DType sourceType, ReadOnlySpan<int> shape, DType dtype)
    {
        long count = Tensor.CountElements(shape);
        if (data.Length != count * sourceType.SizeInBytes())
            throw new ArgumentException($"{data.Length} bytes of {sourceType} do not fill shape [{string.Join(", ", shape.ToArray())}]", nameof(data));
        var tensor = Allocate(shape, dtype);
        ConvertBytes(data, sourceType, Bytes(tensor), dtype, count);
        return tensor;
    }

    /// <inheritdoc/>
    public void CopyToHost(Tensor tensor, Span<byte> destination) => Bytes(tensor).CopyTo(destination);

    /// <inheritdoc/>
    public Tensor Cast(Tensor tensor, DType dtype)
    {
        var result = Allocate(tensor.Shape, dtype);
        ConvertBytes(Bytes(tensor), tensor.DType, Bytes(result), dtype, tensor.ElementCount);
        return result;
    }

    /// <inheritdoc/>
    public Tensor Add(Tensor a, Tensor b)
    {
        RequireSameShape(a, b, nameof(Add));
        var result = Allocate(a.Shape, a.DType);
        if (a.DType == DType.F64) TensorPrimitives.Add(Span<double>(a), Span<double>(b), Span<double>(result));
        else TensorPrimitives.Add(Span<float>(Compute(a)), Span<float>(Compute(b)), Span<float>(result));
        return result;
    }

    /// <inheritdoc/>
    public void Copy(Tensor source, Tensor destination)
    {
        if (source.ElementCount != destination.ElementCount || source.DType != destination.DType)
            throw new ArgumentException($"cannot copy [{source.ShapeText}] {source.DType} into [{destination.ShapeText}] {destination.DType}");
        Bytes(source).CopyTo(Bytes(destination));
    }

    /// <inheritdoc/>
    public Tensor Transpose(Tensor matrix)
    {
        if (matrix.Rank != 2) throw new ArgumentException($"Transpose: expected a matrix, got [{matrix.ShapeText}]");
        int rows = matrix.Size(0), columns = matrix.Size(1);
        var result = Allocate([columns, rows], Compute(matrix).DType);
        if (matrix.DType == DType.F64) TransposeBlocked(Span<double>(matrix), Span<double>(result), rows, columns);
        else TransposeBlocked(Span<float>(matrix), Span<float>(result), rows, columns);
        return result;
    }

    // 32 x 32 tiles keep both the rows read and the rows written in L1.
    private static void TransposeBlocked<T>(ReadOnlySpan<T> source, Span<T> destination, int rows, int columns)
    {
        const int Tile = 32;
        for (int r0 = 0; r0 < rows; r0 += Tile)
            for (int c0 = 0; c0 < columns; c0 += Tile)
                for (int r = r0; r < Math.Min(r0 + Tile, rows); r++)
                    for (int c = c0; c < Math.Min(c0 + Tile, columns); c++)
                        destination[c * rows + r] = source[r * columns + c];
    }

    /// <inheritdoc/>
    public void AddInPlace(Tensor accumulator, Tensor value)
    {
        if (accumulator.ElementCount != value.ElementCount || accumulator.DType != value.DType)
            throw new ArgumentException($"cannot add [{value.ShapeText}] {value.DType} into [{accumulator.ShapeText}] {accumulator.DType}");
        if (accumulator.DType == DType.F64) TensorPrimitives.Add(Span<double>(accumulator), Span<double>(value), Span<double>(accumulator));
        else TensorPrimitives.Add(Span<float>(Compute(accumulator)), Span<float>(value), Span<float>(accumulator));
    }

    /// <inheritdoc/>
    public void ScaleInPlace(Tensor tensor, double factor)
    {
        if (tensor.DType == DType.F64) TensorPrimitives.Multiply(Span<double>(tensor), factor, Span<double>(tensor));
        else TensorPrimitives.Multiply(Span<float>(Compute(tensor)), (float)factor, Span<float>(tensor));
    }

    /// <summary>Returns the cached memory to the system; memory of live tensors stays theirs.</summary>
    public void Dispose() => _pool.ReleaseCached();

    internal Tensor Allocate(ReadOnlySpan<int> shape, DType dtype)
    {
        long bytes = Tensor.CountElements(shape) * dtype.SizeInBytes();
        return new Tensor(this, new CpuStorage(_pool, bytes), shape.ToArray(), dtype);
    }

    private static void FillNaN(Tensor tensor)
    {
        switch (tensor.DType)
        {
            case DType.F32: Span<float>(tensor).Fill(float.NaN); break;
            case DType.F64: Span<double>(tensor).Fill(double.NaN); break;
            default: MemoryMarshal.Cast<byte, ushort>(Bytes(tensor)).Fill(0x7FFF); break; // NaN in both F16 and BF16
        }
    }

    internal static Span<byte> Bytes(Tensor tensor)
    {
        tensor.ThrowIfDisposed();
        // A view (StorageView) is part of its root's block, RootOffset bytes in.
        if (tensor.Storage.Root is not CpuStorage storage)
            throw new ArgumentException($"{tensor} is not in CPU memory; move it to the CPU backend first");
        long length = tensor.ElementCount * tensor.DType.SizeInBytes();
        if (length > int.MaxValue) throw new NotSupportedException($"{tensor} is over 2 GiB, more than one CPU tensor may hold");
        return new Span<byte>((byte*)storage.Pointer + tensor.Storage.RootOffset, (int)length);
    }

    internal static Span<T> Span<T>(Tensor tensor) where T : unmanaged
    {
        if (sizeof(T) != tensor.DType.SizeInBytes() || (typeof(T) == typeof(int)) != (tensor.DType == DType.I32))
            throw new ArgumentException($"{tensor} cannot be read as {typeof(T).Name}");
        return MemoryMarshal.Cast<byte, T>(Bytes(tensor));
    }

    /// <summary>Checks that the tensor is one the CPU ops compute on (F32 or F64).</summary>
    private static Tensor Compute(Tensor tensor)
    {
        if (tensor.DType is not (DType.F32 or DType.F64))
            throw new NotSupportedException($"the CPU backend computes in F32 or F64; cast {tensor} first");
        return tensor;
    }

    private static void RequireSameShape(Tensor a, Tensor b, string op)
    {
        if (!a.Shape.SequenceEqual(b.Shape) || a.DType != b.DType)
            throw new ArgumentException($"{op}: [{a.ShapeText}] {a.DType} and [{b.ShapeText}] {b.DType} differ");
    }

    private static void ConvertBytes(ReadOnlySpan<byte> source, DType sourceType, Span<byte> destination, DType destinationType, long count)
    {
        if (sourceType == destinationType) { source.CopyTo(destination); return; }
        if (!sourceType.IsFloatingPoint() || !destinationType.IsFloatingPoint())
            throw new NotSupportedException($"no conversion from {sourceType} to {destinationType}");
        switch (destinationType)
        {
            case DType.F32:
                DTypes.WidenToSingle(source, sourceType, MemoryMarshal.Cast<byte, float>(destination));
                return;
            case DType.F64 when sourceType == DType.F32:
                TensorPrimitives.ConvertChecked<float, double>(MemoryMarshal.Cast<byte, float>(source), MemoryMarshal.Cast<byte, double>(destination));
                return;
        }
        // Everything else goes through F32: F16/BF16 are exactly representable there.
        var singles = new float[count];
        DTypes.WidenToSingle(source, sourceType, singles);
        switch (destinationType)
        {
            case DType.F64:
                TensorPrimitives.ConvertChecked<float, double>(singles, MemoryMarshal.Cast<byte, double>(destination));
                break;
            case DType.F16:
                TensorPrimitives.ConvertToHalf(singles, MemoryMarshal.Cast<byte, Half>(destination));
                break;
            case DType.BF16:
                var bf = MemoryMarshal.Cast<byte, ushort>(destination);
                for (int i = 0; i < singles.Length; i++) bf[i] = DTypes.SingleToBFloat16(singles[i]);
                break;
        }
    }
}
