namespace Phi2Native.Tensors;

/// <summary>
/// What every backend (managed CPU, CUDA) is: memory and transfers, and the few tensor basics autograd itself needs
/// (casts, sums, copies, transposes, scaling). The model's ops are not here: each op family lives in one home in
/// Phi2Native.Backends (<c>Ops/&lt;Family&gt;/</c>), checks its contract once, and dispatches on the backend there;
/// <see cref="Supports"/> answers which dtypes an op computes in on this backend.
/// </summary>
/// <remarks>
/// Floating-point inputs of one call share a dtype; the CPU backend computes in F32 and F64, the CUDA backend in F32
/// and BF16 (F16 where a kernel has it). No member returns a value computed from device data except
/// <see cref="CopyToHost"/>, the one place a device backend waits for its work.
/// </remarks>
public interface IBackend : IDisposable
{
    // Memory and transfers.

    /// <summary>The device this backend computes on.</summary>
    Device Device { get; }

    /// <summary>Bytes held by tensors, their peak, and bytes cached for reuse.</summary>
    MemoryStatistics Memory { get; }

    /// <summary>Returns memory cached for reuse to the system (or the driver).</summary>
    void ReleaseCachedMemory();

    /// <summary>Starts a new peak measurement at the current use.</summary>
    void ResetPeakMemory();

    /// <summary>A tensor of undefined contents (backends may poison it with NaN to catch reads before writes).</summary>
    Tensor Empty(ReadOnlySpan<int> shape, DType dtype);

    /// <summary>A tensor of zeros.</summary>
    Tensor Zeros(ReadOnlySpan<int> shape, DType dtype);

    /// <summary>A tensor of <paramref name="dtype"/> from raw little-endian host bytes of <paramref name="sourceType"/>, converted on the way.</summary>
    Tensor FromBytes(ReadOnlySpan<byte> data, DType sourceType, ReadOnlySpan<int> shape, DType dtype);

    /// <summary>Copies the tensor's raw bytes (in its own dtype) to host memory.</summary>
    void CopyToHost(Tensor tensor, Span<byte> destination);

    /// <summary>Copies the elements of <paramref name="source"/> into <paramref name="destination"/> (same element count and dtype).</summary>
    void Copy(Tensor source, Tensor destination);

    // The tensor basics autograd needs (casts, gradient sums, transposes, scaling).

    /// <summary>Whether this backend computes <paramref name="op"/> in <paramref name="dtype"/> (what the op declares).</summary>
    bool Supports(BackendOp op, DType dtype) => op.Supports(Device.Kind, dtype);

    /// <summary>A converted copy (F32 &lt;-&gt; F64/F16/BF16).</summary>
    Tensor Cast(Tensor tensor, DType dtype);

    /// <summary>a + b, same shapes.</summary>
    Tensor Add(Tensor a, Tensor b);

    /// <summary>The transpose of a matrix [R, C] -> [C, R].</summary>
    Tensor Transpose(Tensor matrix);

    /// <summary>accumulator += value, same element counts.</summary>
    void AddInPlace(Tensor accumulator, Tensor value);

    /// <summary>tensor *= factor.</summary>
    void ScaleInPlace(Tensor tensor, double factor);
}
