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
    /// Partial rotary embedding (half-split) of x [B, T, H, D] on dims [0, rotaryDim) of each head; position of t is positionOffset + t.
    /// </summary>
    Tensor Rotary(Tensor x, int rotaryDim, double theta, int positionOffset);

    /// <summary>dx (=) from dOutput: the inverse rotation.</summary>
    void RotaryBackward(Tensor dOutput, Tensor dx, int rotaryDim, double theta, int positionOffset);

    /// <summary>
    /// Causal attention: q [B, Tq, H, D], k and v [B, Tk, H, D] (Tk >= Tq; query i sits at position Tk - Tq + i),
    /// scores scaled by 1/sqrt(D), softmax in fp32 or wider. Returns [B, Tq, H, D]; saves logSumExp [B, H, Tq].
    /// </summary>
    Tensor Attention(Tensor q, Tensor k, Tensor v, out Tensor logSumExp);

    /// <summary>Gradients of attention: dq, dk, dv (=), each may be null; probabilities recomputed from logSumExp.</summary>
    void AttentionBackward(Tensor dOutput, Tensor q, Tensor k, Tensor v, Tensor output, Tensor logSumExp, Tensor? dq, Tensor? dk, Tensor? dv);

    /// <summary>
    /// KV-cache write: copies <paramref name="source"/> [B, T, H, D] into rows [position, position + T) of
    /// <paramref name="cache"/> [B, Tmax, H, D] (same B, H, D and dtype; position + T &lt;= Tmax). Other rows are untouched.
    /// </summary>
    void CacheWrite(Tensor source, Tensor cache, int position);

    /// <summary>
    /// Causal attention of q [B, Tq, H, D] against the first <paramref name="keyTime"/> rows of
    /// <paramref name="keyCache"/> and <paramref name="valueCache"/> [B, Tmax, H, D], read in place (no copy of the
    /// prefix); query i sits at position keyTime - Tq + i. The same math as <see cref="Attention"/> over those rows.
    /// Inference only: returns [B, Tq, H, D] and saves nothing for backward.
    /// </summary>
    Tensor CachedAttention(Tensor q, Tensor keyCache, Tensor valueCache, int keyTime);

    /// <summary>
    /// Gathers positions along dim 1: x [B, T, ...] (any dtype) and <paramref name="positions"/> [B, K] (I32, each in
    /// [0, T)) -> [B, K, ...] with output[b, k] = x[b, positions[b, k]]. Generation takes the last position of each
    /// row of the hidden states [B, T, C] with it (K = 1), so that the final LayerNorm and lm_head run on B rows
    /// instead of B x T, and a batch of prompts of different lengths takes each row's own last position.
    /// Inference only: nothing is saved for backward. A device backend implements it as B x K row copies of
    /// x.ElementCount / (B x T) elements on the device (the positions stay on the device); callers pass valid
    /// positions (the CPU backend checks them, a device backend need not).
    /// </summary>
    Tensor SelectPositions(Tensor x, Tensor positions);

    /// <summary>
    /// Per-row partial rotary for a KV cache whose rows hold different lengths: as
    /// <see cref="Rotary"/>, but the position of (b, t) is <paramref name="rowOffsets"/>[b] + t,
    /// rowOffsets being I32 [B] on this backend (each &gt;= 0). Inference only (no backward counterpart).
    /// Callers pass valid offsets: the CPU backend checks them and throws; a device backend need not read them back
    /// (the CUDA backend gives a row with a negative offset NaN output instead).
    /// </summary>
    Tensor RotaryPerRow(Tensor x, int rotaryDim, double theta, Tensor rowOffsets);

    /// <summary>
    /// Per-row KV-cache write: as <see cref="CacheWrite"/>, but row b of <paramref name="source"/>
    /// [B, T, H, D] goes to rows [p, p + T) of batch row b of the cache, p = <paramref name="rowPositions"/>[b]
    /// (I32 [B] on this backend, p + T &lt;= Tmax). Callers pass valid positions: the CPU backend checks them and
    /// throws; a device backend need not read them back (the CUDA backend skips a row whose rows would leave the
    /// cache, leaving them as they were).
    /// </summary>
    void CacheWritePerRow(Tensor source, Tensor cache, Tensor rowPositions);

    /// <summary>
    /// Per-row cached attention: as <see cref="CachedAttention"/>, but batch row b attends
    /// over the first <paramref name="rowKeyTimes"/>[b] rows of its cache (I32 [B] on this backend, each in
    /// [Tq, Tmax]), its query i sitting at position rowKeyTimes[b] - Tq + i. Row b's result is exactly what the
    /// plain op gives for that row alone with keyTime = rowKeyTimes[b].
    /// </summary>
    Tensor CachedAttentionPerRow(Tensor q, Tensor keyCache, Tensor valueCache, Tensor rowKeyTimes);

    /// <summary>Dropout with probability p and a counter-based mask from seed (reproducible on every backend).</summary>
    Tensor Dropout(Tensor x, double p, ulong seed);

    /// <summary>dx (=) of dropout: the same mask, recomputed from the seed.</summary>
    void DropoutBackward(Tensor dOutput, Tensor dx, double p, ulong seed);

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
