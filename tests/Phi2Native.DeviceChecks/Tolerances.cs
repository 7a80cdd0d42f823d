using Phi2Native.Tensors;

namespace Phi2Native.DeviceChecks;

/// <summary>An allowed difference from a reference: |actual - expected| &lt;= Absolute + Relative * |expected|.</summary>
/// <param name="Absolute">atol: covers results near zero, where a relative bound means nothing.</param>
/// <param name="Relative">rtol: the part that scales with the value.</param>
public readonly record struct Tolerance(double Absolute, double Relative)
{
    /// <summary><see cref="CheckResult.Compare(string, ReadOnlySpan{float}, ReadOnlySpan{float}, double, double)"/> with this tolerance.</summary>
    public CheckResult Compare(string what, ReadOnlySpan<float> actual, ReadOnlySpan<float> expected) =>
        CheckResult.Compare(what, actual, expected, Absolute, Relative);

    /// <summary>"atol .., rtol ..", for messages.</summary>
    public override string ToString() => $"atol {Absolute:G2}, rtol {Relative:G2}";
}

/// <summary>
/// Every tolerance the device checks use, in one place, per dtype of the compared output, forward and gradient
/// separately. Inputs are the same values on both sides (the CPU widens the very bf16/f16 values the device reads),
/// so what remains is fp32 arithmetic in another order (reduction trees, FMA contraction on the GPU) plus, for a
/// 16-bit output, its one rounding: half an ulp, 2^-9 (bf16) or 2^-12 (f16) relative at worst, doubled when the
/// fp32 results straddle a rounding boundary. Elementwise ops and casts are held to bit equality instead.
/// </summary>
public static class Tolerances
{
    /// <summary>Forward outputs (LayerNorm y, statistics, row reductions) of <paramref name="dtype"/>.</summary>
    public static Tolerance Forward(DType dtype) => dtype switch
    {
        // A few fp32 ulps of a unit-scale result: reordered sums over a few thousand terms.
        DType.F32 => new(1e-5, 1e-5),
        // One bf16 ulp (2^-7 relative at the bottom of a binade), plus fp32 noise near zero.
        DType.BF16 => new(1e-5, 1.0 / 128),
        // One f16 ulp (2^-10 relative).
        DType.F16 => new(1e-5, 1.0 / 1024),
        _ => throw new ArgumentException($"no device tolerance for {dtype}", nameof(dtype)),
    };

    /// <summary>
    /// Gradients of <paramref name="dtype"/>: looser than forward, since dX subtracts two row means from g and the
    /// parameter gradients sum over every row, both cancelling to values small next to their terms.
    /// </summary>
    public static Tolerance Gradient(DType dtype) => dtype switch
    {
        DType.F32 => new(2e-5, 2e-5),
        DType.BF16 => new(1e-4, 1.0 / 128),
        DType.F16 => new(2e-5, 1.0 / 1024),
        _ => throw new ArgumentException($"no device tolerance for {dtype}", nameof(dtype)),
    };

    /// <summary>
    /// dLogits of cross-entropy with upstream scale <paramref name="scale"/>: scale * (softmax - onehot). Both sides
    /// form exp(x - lse) from an fp32 lse of their own, which may differ by an ulp or two (2^-23 |lse| relative each,
    /// so a few 10^-6 for |lse| up to ~100), and exp itself by an ulp or two; the absolute part is scaled with the
    /// gradient, whose entries are probabilities times scale (1e-3 of scale and far less at V of a thousand).
    /// </summary>
    public static Tolerance CrossEntropyGradient(DType dtype, double scale) => dtype switch
    {
        DType.F32 => new(1e-7 * Math.Abs(scale), 2e-5),
        // One bf16 rounding of the output on each side (the CPU's cast of its fp32 result).
        DType.BF16 => new(1e-7 * Math.Abs(scale), 1.0 / 128),
        _ => throw new ArgumentException($"no cross-entropy gradient tolerance for {dtype}", nameof(dtype)),
    };

    /// <summary>
    /// The output of the tensor-core attention forward (kernels/attention_mma.cu) against the fp32 CPU attention, with values
    /// bounded by <paramref name="valueBound"/> (max |v|). It rounds each probability to the dtype before P V (unit roundoff
    /// 2^-8 in bf16, 2^-11 in f16), so out_i = sum_j p_ij v_j moves by at most that times sum_j p_ij |v_j| &lt;= valueBound:
    /// the absolute part; the relative part is the output's own rounding, as <see cref="Forward"/>. Its logSumExp is fp32
    /// from fp32 probabilities: <see cref="Forward"/>(F32).
    /// </summary>
    public static Tolerance AttentionTensorCoreOutput(DType dtype, double valueBound) => dtype switch
    {
        DType.BF16 => new(Math.ScaleB(valueBound, -8), 1.0 / 128),
        DType.F16 => new(Math.ScaleB(valueBound, -11), 1.0 / 1024),
        _ => throw new ArgumentException($"no tensor-core attention tolerance for {dtype}", nameof(dtype)),
    };

    /// <summary>
    /// A gradient of the tensor-core attention backward (kernels/attention_mma_backward.cu) against the fp32 CPU backward, where
    /// <paramref name="roundingBound"/> is the largest sum of the absolute terms its products round: max sum_i p_ij |dO_i|
    /// for dv, max sum_i |ds_ij| |q_i| for dk, max sum_j |ds_ij| |k_j| for dq (the check computes them from the inputs).
    /// It rounds each p and ds to the dtype before those products (unit roundoff 2^-8 in bf16, 2^-11 in f16), so a
    /// gradient moves by at most that times its bound: the absolute part, on top of <see cref="Gradient"/>'s, whose
    /// relative part is the gradient's own rounding on store.
    /// </summary>
    public static Tolerance AttentionTensorCoreGradient(DType dtype, double roundingBound) => dtype switch
    {
        DType.BF16 => new(Gradient(dtype).Absolute + Math.ScaleB(roundingBound, -8), Gradient(dtype).Relative),
        DType.F16 => new(Gradient(dtype).Absolute + Math.ScaleB(roundingBound, -11), Gradient(dtype).Relative),
        _ => throw new ArgumentException($"no tensor-core attention tolerance for {dtype}", nameof(dtype)),
    };

    /// <summary>
    /// A whole model on the CUDA backend against the CPU backend (logits, loss, every parameter's gradient after a few
    /// layers): each op's fp32 reordering compounds through the layers, and a parameter gradient sums over every row,
    /// so the absolute part is larger than a single op's. Scaled like the golden suite's F32 gradient tolerance.
    /// </summary>
    public static Tolerance Model => new(1e-4, 1e-3);
}
