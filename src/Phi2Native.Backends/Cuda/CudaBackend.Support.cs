using System.Runtime.InteropServices;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Cuda;

// Argument checks and scratch memory shared by the ops: every tensor argument goes through Pointer (this backend's,
// not disposed), every op names the dtypes its kernels have, and short-lived device buffers are Scratch.
public sealed partial class CudaBackend
{
    private readonly Dictionary<DType, (DevicePtr Pointer, long Count)> _ones = [];
    private readonly List<DevicePtr> _retiredCounters = [];
    private (DevicePtr Pointer, long Count) _counters;

    /// <summary>
    /// The device address of <paramref name="tensor"/>'s first element, refusing a disposed tensor, a CPU tensor or one of
    /// another CUDA backend with a message naming <paramref name="argument"/>.
    /// </summary>
    internal DevicePtr Pointer(Tensor tensor, string argument)
    {
        ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(tensor, argument);
        tensor.ThrowIfDisposed();
        // A view (StorageView) is part of its root's allocation, RootOffset bytes in.
        if (tensor.Storage.Root is not CudaStorage storage)
            throw new ArgumentException($"{argument}: {tensor} is in {tensor.Device} memory, not on {Device}; create it on this backend (FromBytes) first", argument);
        if (storage.Backend != this)
            throw new ArgumentException($"{argument}: {tensor} belongs to another CUDA backend; tensors cannot be shared between backends", argument);
        return storage.Pointer.Offset(tensor.Storage.RootOffset);
    }

    /// <summary>Like <see cref="Pointer"/>, but a null tensor (a gradient not wanted) gives the null pointer.</summary>
    internal DevicePtr OptionalPointer(Tensor? tensor, string argument) => tensor is null ? DevicePtr.Null : Pointer(tensor, argument);

    /// <summary>Refuses a dtype the op has no kernel for, naming the op, the argument and what it has.</summary>
    private static void RequireDType(Tensor tensor, string op, string argument, params ReadOnlySpan<DType> supported)
    {
        if (!supported.Contains(tensor.DType))
            throw new NotSupportedException($"{op}: {argument} is {tensor.DType}; the CUDA backend computes it in {string.Join(" or ", supported.ToArray())}");
    }

    private static void RequireSameDType(Tensor tensor, DType dtype, string op, string argument)
    {
        if (tensor.DType != dtype) throw new ArgumentException($"{op}: {argument} is {tensor.DType}, expected {dtype} like the other inputs", argument);
    }

    private static void RequireRank(Tensor tensor, int rank, string what)
    {
        if (tensor.Rank != rank) throw new ArgumentException($"{what}: expected rank {rank}, got [{tensor.ShapeText}]");
    }

    private static void RequireVector(Tensor tensor, int length, string what)
    {
        if (tensor.Rank != 1 || tensor.Size(0) != length) throw new ArgumentException($"{what}: expected [{length}], got [{tensor.ShapeText}]");
    }

    private static void RequireShape(Tensor tensor, ReadOnlySpan<int> shape, string what)
    {
        if (!tensor.Shape.SequenceEqual(shape))
            throw new ArgumentException($"{what}: expected [{string.Join(", ", shape.ToArray())}], got [{tensor.ShapeText}]");
    }

    private static void RequireCount(Tensor tensor, long count, string what)
    {
        if (tensor.ElementCount != count) throw new ArgumentException($"{what}: expected {count} elements, got [{tensor.ShapeText}]");
    }

    private static void RequireIds(Tensor ids, string what)
    {
        if (ids.DType != DType.I32) throw new ArgumentException($"{what}: expected I32 ids, got {ids.DType}");
    }

    private static int Int(long value, string what) =>
        value <= int.MaxValue ? (int)value : throw new NotSupportedException($"{what} = {value} is more than the kernels' int sizes take");

    /// <summary>The device's int values of an I32 tensor (a synchronizing copy): the host-side id checks read them.</summary>
    private int[] ReadInt32(Tensor ids, string argument)
    {
        var values = new int[ids.ElementCount];
        if (values.Length > 0)
        {
            _device.CopyToHost(MemoryMarshal.AsBytes(values.AsSpan()), Pointer(ids, argument), _stream);
            _device.Synchronize(_stream);
        }
        return values;
    }

    /// <summary>
    /// A device vector of at least <paramref name="count"/> ones of <paramref name="dtype"/>, kept for reuse (grown when
    /// needed): the right-hand side of the GEMM that sums a matrix's rows (Linear's bias gradient).
    /// </summary>
    internal DevicePtr Ones(DType dtype, long count)
    {
        if (_ones.TryGetValue(dtype, out var ones) && ones.Count >= count) return ones.Pointer;
        long capacity = Math.Max(count, 2 * (ones.Count));
        var values = new float[capacity];
        Array.Fill(values, 1f);
        var pointer = _device.Allocate(capacity * dtype.SizeInBytes());
        try
        {
            _device.CopyToDevice(pointer, DeviceBuffer.Encode(dtype, values), _stream);
        }
        catch
        {
            _device.Free(pointer);
            throw;
        }
        // The old vector may still be read by queued work: the device's Free is stream-safe (the caching allocator fences it).
        if (!ones.Pointer.IsNull) _device.Free(ones.Pointer);
        _ones[dtype] = (pointer, capacity);
        return pointer;
    }

    /// <summary>
    /// At least <paramref name="count"/> I32 zeros that every kernel given them leaves zero again: the split-K decode's
    /// per-(batch row, head) counts of finished chunks (kernels/attention_decode.cu). Zeroed once when made (uploaded), then kept for
    /// the backend's life (the kernels reset them, so no fill per launch: a fill would be one more node of a captured
    /// decode graph); grown when needed. A grown-out vector is kept until the backend is disposed too, since a captured
    /// graph may still replay kernels that hold its address. The first decode runs eagerly before a capture, so a
    /// capture finds them made.
    /// </summary>
    internal DevicePtr ZeroedCounters(long count)
    {
        if (_counters.Count >= count) return _counters.Pointer;
        long capacity = Math.Max(count, 2 * _counters.Count);
        var pointer = _device.Allocate(capacity * sizeof(int));
        try
        {
            // An upload, not a fill: a fill is a device operation of the step that first decodes (the eager warm-up of a
            // decode graph), which the profile matches one for one with the graph's operations.
            _device.CopyToDevice(pointer, new byte[capacity * sizeof(int)], _stream);
        }
        catch
        {
            _device.Free(pointer);
            throw;
        }
        if (!_counters.Pointer.IsNull) _retiredCounters.Add(_counters.Pointer);
        _counters = (pointer, capacity);
        return pointer;
    }

    private void FreeScratch()
    {
        foreach (var (pointer, _) in _ones.Values) _device.Free(pointer);
        _ones.Clear();
        foreach (var pointer in _retiredCounters) _device.Free(pointer);
        _retiredCounters.Clear();
        if (!_counters.Pointer.IsNull) _device.Free(_counters.Pointer);
        _counters = default;
    }

    /// <summary>A device buffer of <paramref name="bytes"/> for the length of one op (freed on dispose; nothing for 0 bytes).</summary>
    private ScratchBuffer Scratch(long bytes) => new(_device, bytes);

    /// <summary>
    /// Device memory an op needs only while it runs (staging, workspaces, flags). Freed right after the op has queued its
    /// work: the emulated device runs launches synchronously, and a GPU's caching allocator hands a freed block out again
    /// only once the work queued before the free has finished.
    /// </summary>
    private readonly struct ScratchBuffer : IDisposable
    {
        private readonly IDeviceApi _device;

        public ScratchBuffer(IDeviceApi device, long bytes)
        {
            _device = device;
            Pointer = bytes > 0 ? device.Allocate(bytes) : DevicePtr.Null;
        }

        public DevicePtr Pointer { get; }

        public void Dispose()
        {
            if (!Pointer.IsNull) _device.Free(Pointer);
        }
    }
}
