using System.Runtime.InteropServices;

namespace Phi2Native.Tensors;

/// <summary>
/// A dense, contiguous, row-major n-dimensional array in a backend's memory, with the autograd state of
/// the value it holds.
/// </summary>
/// <remarks>
/// Tensors hold native memory: dispose them, or create them inside a <see cref="TensorScope"/>.
/// Reshaped views share memory with their source and keep it alive until all of them are disposed.
/// Every computation goes through <see cref="Backend"/>; differentiable ones through Phi2Native.Autograd.
/// </remarks>
public sealed class Tensor : IDisposable
{
    private readonly int[] _shape;
    private bool _requiresGrad;
    private bool _disposed;

    internal Tensor(IBackend backend, TensorStorage storage, int[] shape, DType dtype)
    {
        Backend = backend;
        Storage = storage;
        _shape = shape;
        DType = dtype;
        ElementCount = CountElements(shape);
        if (ElementCount * dtype.SizeInBytes() > storage.ByteLength)
            throw new ArgumentException($"shape [{string.Join(", ", shape)}] of {dtype} needs more than the storage's {storage.ByteLength} bytes");
        TensorScope.Register(this);
    }

    /// <summary>The backend that owns the memory and runs the ops.</summary>
    public IBackend Backend { get; }

    /// <summary>The device the memory is on.</summary>
    public Device Device => Backend.Device;

    /// <summary>The backend's memory block (shared with reshaped views).</summary>
    public TensorStorage Storage { get; }

    /// <summary>Element type.</summary>
    public DType DType { get; }

    /// <summary>Sizes of the dimensions, outermost first.</summary>
    public ReadOnlySpan<int> Shape => _shape;

    /// <summary>Number of dimensions.</summary>
    public int Rank => _shape.Length;

    /// <summary>Number of elements (product of the shape; 1 for a scalar of rank 0).</summary>
    public long ElementCount { get; }

    /// <summary>Size of dimension <paramref name="dim"/>; negative values count from the end.</summary>
    public int Size(int dim) => _shape[dim < 0 ? dim + _shape.Length : dim];

    /// <summary>An optional name (parameters carry their HF checkpoint name).</summary>
    public string? Name { get; set; }

    /// <summary>
    /// Whether gradients flow to this tensor. Set it on parameters to train; ops set it on their outputs
    /// when any input requires a gradient.
    /// </summary>
    public bool RequiresGrad
    {
        get => _requiresGrad;
        set
        {
            if (value && !DType.IsFloatingPoint())
                throw new InvalidOperationException($"only floating-point tensors can require a gradient, not {DType}");
            _requiresGrad = value;
        }
    }

    /// <summary>
    /// The gradient accumulated into this leaf by <c>GradientTape.Backward</c> (+=), or null before any.
    /// Owned by this tensor and disposed with it; <see cref="ZeroGrad"/> clears it between steps.
    /// </summary>
    public Tensor? Grad { get; internal set; }

    /// <summary>The autograd op that produced this tensor, or null for a leaf (parameters, inputs).</summary>
    internal object? Producer { get; set; }

    /// <summary>True when no recorded op produced this tensor.</summary>
    public bool IsLeaf => Producer == null;

    /// <summary>True once disposed.</summary>
    public bool IsDisposed => _disposed;

    /// <summary>Frees the gradient and drops it.</summary>
    public void ZeroGrad()
    {
        Grad?.Dispose();
        Grad = null;
    }

    /// <summary>A view with another shape over the same memory; one dimension may be -1 (inferred).</summary>
    public Tensor Reshape(params int[] shape)
    {
        ThrowIfDisposed();
        var resolved = (int[])shape.Clone();
        int inferred = Array.IndexOf(resolved, -1);
        if (inferred >= 0)
        {
            long known = 1;
            for (int i = 0; i < resolved.Length; i++) if (i != inferred) known *= resolved[i];
            if (known == 0 || ElementCount % known != 0)
                throw new ArgumentException($"cannot reshape [{ShapeText}] to [{string.Join(", ", shape)}]");
            resolved[inferred] = (int)(ElementCount / known);
        }
        if (CountElements(resolved) != ElementCount)
            throw new ArgumentException($"cannot reshape [{ShapeText}] ({ElementCount} elements) to [{string.Join(", ", shape)}]");
        Storage.AddReference();
        return new Tensor(Backend, Storage, resolved, DType) { Name = Name };
    }

    /// <summary>
    /// A tensor of <paramref name="shape"/> over this one's elements [<paramref name="elementOffset"/>, + its count): a
    /// contiguous part (a row block of a matrix) that shares the memory and keeps it alive (<see cref="StorageView"/>).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The part is not inside this tensor.</exception>
    internal Tensor View(long elementOffset, params int[] shape)
    {
        ThrowIfDisposed();
        long count = CountElements(shape), size = DType.SizeInBytes();
        if (elementOffset < 0 || elementOffset + count > ElementCount)
            throw new ArgumentOutOfRangeException(nameof(elementOffset), elementOffset, $"elements [{elementOffset}, +{count}) are not inside [{ShapeText}]");
        var view = new StorageView(Storage, elementOffset * size, count * size);
        try
        {
            return new Tensor(Backend, view, (int[])shape.Clone(), DType);
        }
        catch
        {
            view.RemoveReference();
            throw;
        }
    }

    /// <summary>Whether <paramref name="next"/> (same backend and dtype) starts in the same memory block right where this tensor ends.</summary>
    internal bool Precedes(Tensor next) =>
        next.Backend == Backend && next.DType == DType && next.Storage.Root == Storage.Root &&
        next.Storage.RootOffset == Storage.RootOffset + ElementCount * DType.SizeInBytes();

    /// <summary>The shape as text, e.g. "2, 7, 60".</summary>
    public string ShapeText => string.Join(", ", _shape);

    /// <summary>Copies the elements to a new array of <typeparamref name="T"/>, which must match <see cref="DType"/> in size.</summary>
    public T[] ToArray<T>() where T : unmanaged
    {
        ThrowIfDisposed();
        if (Marshal.SizeOf<T>() != DType.SizeInBytes())
            throw new InvalidOperationException($"cannot read a {DType} tensor as {typeof(T).Name}");
        var result = new T[ElementCount];
        Backend.CopyToHost(this, MemoryMarshal.AsBytes(result.AsSpan()));
        return result;
    }

    /// <summary>The elements as float, converting from F16, BF16 or F64.</summary>
    public float[] ToSingleArray()
    {
        ThrowIfDisposed();
        if (DType == DType.F32) return ToArray<float>();
        if (!DType.IsFloatingPoint()) throw new InvalidOperationException($"cannot read a {DType} tensor as float");
        var raw = new byte[ElementCount * DType.SizeInBytes()];
        Backend.CopyToHost(this, raw);
        var result = new float[ElementCount];
        DTypes.WidenToSingle(raw, DType, result);
        return result;
    }

    /// <summary>The elements as double (exact for every floating dtype).</summary>
    public double[] ToDoubleArray()
    {
        if (DType == DType.F64) return ToArray<double>();
        return Array.ConvertAll(ToSingleArray(), x => (double)x);
    }

    /// <summary>A scalar's value (a tensor of one element).</summary>
    public double Item()
    {
        if (ElementCount != 1) throw new InvalidOperationException($"Item() needs a one-element tensor, not [{ShapeText}]");
        return ToDoubleArray()[0];
    }

    internal void ThrowIfDisposed()
    {
        if (_disposed) throw new ObjectDisposedException(Name ?? "Tensor", "the tensor was disposed (by its TensorScope or its owner)");
    }

    /// <summary>Releases this tensor's reference to the memory, and its gradient.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Storage.RemoveReference();
        ZeroGrad();
    }

    /// <inheritdoc/>
    public override string ToString() => $"Tensor{(Name is null ? "" : " " + Name)} [{ShapeText}] {DType} on {Device}";

    internal static long CountElements(ReadOnlySpan<int> shape)
    {
        long count = 1;
        foreach (int size in shape)
        {
            if (size < 0) throw new ArgumentException($"negative dimension in shape [{string.Join(", ", shape.ToArray())}]");
            count = checked(count * size);
        }
        return count;
    }
}
