using Phi2Native.Backends.Ops.Activation;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Mlp;

/// <summary>
/// Decides <see cref="IBlas.GeluEpilogueIsGeluNew"/> for a device, once, when a GPU backend opens: whether cuBLASLt's
/// GELU_AUX_BIAS computes gelu_new (the tanh form Phi-2 uses) closely enough that LinearGeluOp may put fc1's bias and
/// activation in the GEMM's epilogue. Two parts, both must pass:
/// <list type="bullet">
/// <item>bf16, the dtype the model runs in: one GEMM at an MLP-like shape (m 256, n 40 rows, k 80), each element of D
/// against the CPU's gelu_new (<see cref="CpuGelu"/>, in double) of its own aux value. cuBLASLt may apply the GELU to h
/// before rounding h to the aux's bf16, so D must lie within the bf16 tolerance of gelu_new over the interval of h that
/// rounds to the aux value (aux +- half an ulp), not merely of gelu_new(aux). Comparing against the device's own aux
/// isolates the GELU from the product; aux spans about [-8, 8].</item>
/// <item>fp32: D nearer the tanh form than the erf form by 4x in rms, and within (1e-6 + 2e-3 |y|) of the tanh form;
/// bf16 cannot resolve the two forms (they differ by about 1e-4).</item>
/// </list>
/// The probe costs five small allocations, two GEMMs and two reads back, once per backend. The device checks report
/// the same verdict as checks (GeluEpilogueProbe in the device-check suite wraps this one).
/// </summary>
internal static class GeluEpilogueProbe
{
    /// <summary>The probe's outcome.</summary>
    /// <param name="Bf16">The bf16 part.</param>
    /// <param name="Fp32">The fp32 part; its worst ratio is infinite when D is not clearly the tanh form.</param>
    internal sealed record Verdict(Comparison Bf16, Comparison Fp32)
    {
        /// <summary>Both parts pass: LinearGeluOp may take the epilogue.</summary>
        public bool IsGeluNew => Bf16.Passed && Fp32.Passed;

        /// <inheritdoc/>
        public override string ToString() =>
            $"{(IsGeluNew ? "GELU_AUX_BIAS is gelu_new" : "GELU_AUX_BIAS is NOT gelu_new")}: bf16 {Bf16}; fp32 {Fp32}";
    }

    /// <summary>One part's result.</summary>
    /// <param name="WorstRatio">The worst error over its tolerance (passes at 1 or less).</param>
    /// <param name="MaxError">The largest absolute error.</param>
    /// <param name="Detail">Where the worst element was, and its values.</param>
    internal sealed record Comparison(double WorstRatio, double MaxError, string Detail)
    {
        /// <summary>Within tolerance everywhere.</summary>
        public bool Passed => WorstRatio <= 1;

        /// <inheritdoc/>
        public override string ToString() => $"worst {WorstRatio:G3} of tolerance, max |error| {MaxError:G3}: {Detail}";
    }

    // bf16's tolerance: one ulp (2^-7 relative at the bottom of a binade), plus fp32 noise near zero; DGeluEpilogueProbe's too.
    internal const double Bf16Absolute = 1e-5, Bf16Relative = 1.0 / 128;
    internal const double Fp32Absolute = 1e-6, Fp32Relative = 2e-3;

    /// <summary>Runs both parts on <paramref name="device"/>; does not change its flag (<see cref="Apply"/> does).</summary>
    public static Verdict Run(IDeviceApi device)
    {
        return new Verdict(Bf16(device), Fp32Form(device));
    }

    /// <summary>Runs the probe and sets <paramref name="device"/>'s flag to its verdict.</summary>
    public static Verdict Apply(IDeviceApi device)
    {
        var verdict = Run(device);
        device.Blas.GeluEpilogueIsGeluNew = verdict.IsGeluNew;
        return verdict;
    }

    /// <summary>The bf16 part.</summary>
    public static Comparison Bf16(IDeviceApi device)
    {
        const int m = 256, n = 40, k = 80;
        var (d, aux) = GeluAuxBias(device, DType.BF16, m, n, k, alpha: 1, seed: 61);
        return JudgeBf16(d, aux);
    }

    /// <summary>The bf16 part's judgement of D against the aux values the device wrote beside it.</summary>
    public static Comparison JudgeBf16(float[] d, float[] aux)
    {
        var points = new double[3 * aux.Length];
        for (int i = 0; i < aux.Length; i++)
        {
            double half = aux[i] == 0 ? 0 : 0.5 * Math.Pow(2, Math.Floor(Math.Log2(Math.Abs(aux[i]))) - 7);
            (points[3 * i], points[3 * i + 1], points[3 * i + 2]) = (aux[i] - half, aux[i], aux[i] + half);
        }
        var gelu = new double[points.Length];
        CpuGelu.Forward<double>(points, gelu);
        double worst = 0, maxError = 0;
        int at = -1;
        for (int i = 0; i < aux.Length; i++)
        {
            double low = Math.Min(gelu[3 * i], Math.Min(gelu[3 * i + 1], gelu[3 * i + 2]));
            double high = Math.Max(gelu[3 * i], Math.Max(gelu[3 * i + 1], gelu[3 * i + 2]));
            double error = !float.IsFinite(d[i]) ? double.PositiveInfinity : d[i] < low ? low - d[i] : d[i] > high ? d[i] - high : 0;
            maxError = Math.Max(maxError, error);
            double ratio = error / (Bf16Absolute + Bf16Relative * Math.Max(Math.Abs(low), Math.Abs(high)));
            if (ratio > worst || at < 0) (worst, at) = (ratio, i);
        }
        return new Comparison(worst, maxError, $"D[{at}] = {d[at]} for aux {aux[at]}, against gelu_new over its rounding interval");
    }

    /// <summary>The fp32 part: D against the tanh form; an infinite worst ratio when D is not clearly nearer it than the erf form.</summary>
    public static Comparison Fp32Form(IDeviceApi device)
    {
        const int m = 64, n = 16, k = 32;
        var (d, aux) = GeluAuxBias(device, DType.F32, m, n, k, alpha: 0.5f, seed: 51);
        return JudgeFp32(d, aux);
    }

    /// <summary>The fp32 part's judgement of D against the aux values the device wrote beside it.</summary>
    public static Comparison JudgeFp32(float[] d, float[] aux)
    {
        var tanhForm = new double[aux.Length];
        CpuGelu.Forward<double>(Array.ConvertAll(aux, x => (double)x), tanhForm);
        double tanhSquares = 0, erfSquares = 0, worst = 0, maxError = 0;
        for (int i = 0; i < aux.Length; i++)
        {
            double erfForm = 0.5 * aux[i] * (1 + Erf(aux[i] / Math.Sqrt(2)));
            tanhSquares += (d[i] - tanhForm[i]) * (d[i] - tanhForm[i]);
            erfSquares += (d[i] - erfForm) * (d[i] - erfForm);
            double error = float.IsFinite(d[i]) ? Math.Abs(d[i] - tanhForm[i]) : double.PositiveInfinity;
            maxError = Math.Max(maxError, error);
            worst = Math.Max(worst, error / (Fp32Absolute + Fp32Relative * Math.Abs(tanhForm[i])));
        }
        double tanhRms = Math.Sqrt(tanhSquares / aux.Length), erfRms = Math.Sqrt(erfSquares / aux.Length);
        bool tanh = tanhRms < erfRms / 4;
        return new Comparison(tanh ? worst : double.PositiveInfinity, maxError, $"rms from the tanh form {tanhRms:G3}, from the erf form {erfRms:G3}");
    }

    // D = gelu(alpha x W^T + bias) with h saved as aux: fc1's product in CudaLinear's terms (A = W stored [k, m] read
    // transposed, B = x^T [k, n]); inputs uniform in [-1, 1) rounded to the dtype, bias (i % 13 - 6) / 2.
    private static (float[] D, float[] Aux) GeluAuxBias(IDeviceApi device, DType dtype, int m, int n, int k, float alpha, int seed)
    {
        var random = new Random(seed);
        float[] Values(int count) => [.. Enumerable.Range(0, count).Select(_ => (float)(random.NextDouble() * 2 - 1))];
        using var a = DeviceBuffer.Upload(device, dtype, Values(k * m));
        using var b = DeviceBuffer.Upload(device, dtype, Values(k * n));
        using var bias = DeviceBuffer.Upload(device, dtype, [.. Enumerable.Range(0, m).Select(i => (i % 13 - 6) * 0.5f)]);
        using var d = DeviceBuffer.Allocate(device, dtype, m * n);
        using var aux = DeviceBuffer.Allocate(device, dtype, m * n);
        device.Blas.LtMatmul(new LtMatmulArguments
        {
            TransposeA = BlasOperation.Transpose, TransposeB = BlasOperation.NoTranspose, Alpha = alpha,
            M = m, N = n, K = k, A = a.Pointer, AType = dtype, Lda = k, B = b.Pointer, BType = dtype, Ldb = k,
            D = d.Pointer, DType = dtype, Ldd = m, Epilogue = LtEpilogue.GeluAuxBias,
            Bias = bias.Pointer, BiasType = dtype, Aux = aux.Pointer, AuxLd = m,
        }, default);
        return (d.Download(), aux.Download());
    }

    /// <summary>Abramowitz and Stegun 7.1.26 (error below 1.5e-7): enough to tell the two GELU forms apart.</summary>
    internal static double Erf(double x)
    {
        double t = 1 / (1 + 0.3275911 * Math.Abs(x));
        double y = 1 - t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))) * Math.Exp(-x * x);
        return Math.Sign(x) * y;
    }
}
