using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops;

/// <summary>
/// The checks ops write their contracts with, each naming the op and the argument. An op checks its contract once,
/// before it dispatches; the backends' implementations trust it, and the CUDA launchers check only what keeps memory
/// safe (pointers, alignment, overlap).
/// </summary>
internal static class OpContract
{
    /// <summary>Throws unless <paramref name="tensor"/> is live and on <paramref name="backend"/>.</summary>
    public static void OnBackend(Tensor tensor, IBackend backend, string op, string argument)
    {
        ArgumentNullException.ThrowIfNull(tensor, argument);
        tensor.ThrowIfDisposed();
        if (!ReferenceEquals(tensor.Backend, backend))
            throw new ArgumentException($"{op}: {argument} {tensor} is on another backend ({tensor.Device}) than the op's first input; move it first", argument);
    }

    /// <summary>As <see cref="OnBackend"/> for an optional tensor (null passes).</summary>
    public static void OnBackendIfAny(Tensor? tensor, IBackend backend, string op, string argument)
    {
        if (tensor is not null) OnBackend(tensor, backend, op, argument);
    }

    public static void Rank(Tensor tensor, int rank, string op, string argument, string shape)
    {
        if (tensor.Rank != rank) throw new ArgumentException($"{op}: {argument} must be {shape}, got [{tensor.ShapeText}]", argument);
    }

    public static void Vector(Tensor tensor, int length, string op, string argument)
    {
        if (tensor.Rank != 1 || tensor.Size(0) != length) throw new ArgumentException($"{op}: {argument} must be [{length}], got [{tensor.ShapeText}]", argument);
    }

    public static void Shape(Tensor tensor, ReadOnlySpan<int> shape, string op, string argument)
    {
        if (!tensor.Shape.SequenceEqual(shape))
            throw new ArgumentException($"{op}: {argument} must be [{string.Join(", ", shape.ToArray())}], got [{tensor.ShapeText}]", argument);
    }

    public static void Count(Tensor tensor, long count, string op, string argument, string like)
    {
        if (tensor.ElementCount != count) throw new ArgumentException($"{op}: {argument} must hold {count} elements ({like}), got [{tensor.ShapeText}]", argument);
    }

    public static void DType(Tensor tensor, DType dtype, string op, string argument)
    {
        if (tensor.DType != dtype) throw new ArgumentException($"{op}: {argument} is {tensor.DType}, expected {dtype}", argument);
    }

    /// <summary>A parameter gradient: the parameter's dtype, or F32 over a 16-bit parameter (an fp32 accumulator).</summary>
    public static void GradientDType(Tensor gradient, DType parameterDType, string op, string argument)
    {
        if (gradient.DType != parameterDType && !(gradient.DType == Tensors.DType.F32 && parameterDType.SizeInBytes() == 2))
            throw new ArgumentException($"{op}: {argument} is {gradient.DType}, expected {parameterDType} (or F32 over a 16-bit parameter)", argument);
    }

    /// <summary>A count as the kernels take it (int), refusing one that does not fit.</summary>
    public static int Int(long value, string op, string what) =>
        value is >= 0 and <= int.MaxValue ? (int)value : throw new ArgumentOutOfRangeException(what, value, $"{op}: {what} must fit an int (0..2^31-1)");

    /// <summary>The error for a backend the op has no implementation for.</summary>
    public static NotSupportedException NoImplementation(BackendOp op, IBackend backend) =>
        new($"{op.Name}: no implementation on {backend.GetType().Name} ({backend.Device}); the engine's ops run on {nameof(CpuBackend)} and {nameof(CudaBackend)}");
}
