namespace Phi2Native.Tensors;

/// <summary>
/// The operations every backend (managed CPU, CUDA) implements. Autograd ops and models call only these,
/// so a model runs unchanged on any backend. An op, its kernel and its autograd op carry the same name.
/// </summary>
/// <remarks>
/// Gradient outputs follow one rule: an activation gradient passed in (dx, dq, ...) is overwritten (=);
/// a parameter gradient (dWeight, dBias) is accumulated (+=). A null gradient output is not computed at all.
/// Shapes use B batch, T time, C channels, H heads, D head dim, V vocabulary, N rows.
/// Floating-point inputs of one call share a dtype; the CPU backend computes in F32 and F64.
/// Per-row positions (a batch whose rows sit at different positions of a KV cache) travel as small I32 tensors on
/// the backend, made once per forward, so a device backend reads them on the device instead of taking host arrays
/// in every layer; values must be in range (the CPU backend checks them, a device backend need not).
/// </remarks>
public interface IBackend : IDisposable
{
    /// <summary>The device this backend computes on.</summary>
    Device Device { get; }

    /// <summary>Bytes held by tensors, their peak, and bytes cached for reuse.</summary>
    MemoryStatistics Memory { get; }

    /// <summary>Returns memory cached for reuse to the system (or the driver).</summary>
    void ReleaseCachedMemory();

    /// <summary>Starts a new peak measurement at the current use.</summary>
    void ResetPeakMemory();

    /// <summary>Whether this backend computes <paramref name="op"/> in <paramref name="dtype"/> (what the op declares).</summary>
    bool Supports(BackendOp op, DType dtype) => op.Supports(Device.Kind, dtype);

    /// <summary>A tensor of undefined contents (backends may poison it with NaN to catch reads before writes).</summary>
    Tensor Empty(ReadOnlySpan<int> shape, DType dtype);

    /// <summary>A tensor of zeros.</summary>
    Tensor Zeros(ReadOnlySpan<int> shape, DType dtype);

    /// <summary>A tensor of <paramref name="dtype"/> from raw little-endian host bytes of <paramref name="sourceType"/>, converted on the way.</summary>
    Tensor FromBytes(ReadOnlySpan<byte> data, DType sourceType, ReadOnlySpan<int> shape, DType dtype);

    /// <summary>Copies the tensor's raw bytes (in its own dtype) to host memory.</summary>
    void CopyToHost(Tensor tensor, Span<byte> destination);

    /// <summary>A converted copy (F32 &lt;-&gt; F64/F16/BF16).</summary>
    Tensor Cast(Tensor tensor, DType dtype);

    /// <summary>a + b, same shapes.</summary>
    Tensor Add(Tensor a, Tensor b);

    /// <summary>Copies the elements of <paramref name="source"/> into <paramref name="destination"/> (same element count and dtype).</summary>
    void Copy(Tensor source, Tensor destination);

    /// <summary>The transpose of a matrix [R, C] -> [C, R].</summary>
    Tensor Transpose(Tensor matrix);

    /// <summary>accumulator += value, same element counts.</summary>
    void AddInPlace(Tensor accumulator, Tensor value);

    /// <summary>tensor *= factor.</summary>
    void ScaleInPlace(Tensor tensor, double factor);

    /// <summary>Sum of squares of all elements, accumulated in double (for gradient norms).</summary>
    double SumOfSquares(Tensor tensor);

    /// <summary>
    /// One torch.optim.AdamW update of <paramref name="parameter"/> in place, with its moments updated in place:
    /// <c>p -= lr*wd*p; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= (lr / (1-b1^t)) * m / (sqrt(v) / sqrt(1-b2^t) + eps)</c>.
    /// </summary>
    /// <param name="parameter">The parameter, updated in place.</param>
    /// <param name="gradient">Its gradient, same element count; read only.</param>
    /// <param name="firstMoment">exp_avg, same element count, updated in place (zeros before the first step).</param>
    /// <param name="secondMoment">exp_avg_sq, same element count, updated in place (zeros before the first step).</param>
    /// <param name="arguments">Learning rate, betas, epsilon, weight decay and the 1-based step.</param>
    /// <remarks>The moments are F32 (F64 beside an F64 parameter, for double-precision checks); the CPU backend needs all four tensors in one dtype.</remarks>
    /// <exception cref="ArgumentException">Element counts or dtypes do not match.</exception>
    /// <exception cref="ArgumentOutOfRangeException">An argument torch would reject, or a step below 1.</exception>
    void AdamWStep(Tensor parameter, Tensor gradient, Tensor firstMoment, Tensor secondMoment, in AdamWStepArguments arguments);
}
