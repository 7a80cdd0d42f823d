using Phi2Native.Backends.Ops.Activation;
using Phi2Native.Cuda;
using Phi2Native.Tensors;
using static Phi2Native.Backends.Ops.Mlp.GeluEpilogueProbe;

namespace Phi2Native.Backends.Ops.Mlp;

/// <summary>
/// Decides <see cref="IBlas.DGeluEpilogueIsGeluNew"/> for a device, once, when a GPU backend opens: whether cuBLASLt's
/// DGELU computes D = (P + C) gelu_new'(aux) with beta C inside the product it multiplies (the cuBLAS documentation
/// does not say) and gelu_new's derivative, so that fc2's dx product may deliver fc1's pre-activation gradient
/// (<see cref="GeluGradientFusion"/>). It runs the product as that path does (NN, beta 1, D written over C) in two
/// parts, both of which must pass:
/// <list type="bullet">
/// <item>bf16: every element within one bf16 ulp (plus fp32 noise) of (P + C) gelu_new'(aux) computed in double from
/// the same rounded inputs.</item>
/// <item>fp32: D nearer the tanh form's derivative than the erf form's by 4x in rms, and within (1e-6 + 2e-3 |y|) of it.</item>
/// </list>
/// </summary>
internal static class DGeluEpilogueProbe
{
    /// <summary>Both parts pass on <paramref name="device"/>: (bf16, fp32).</summary>
    public static (Comparison Bf16, Comparison Fp32) Run(IDeviceApi device)
    {
        var (d16, tanh16, _) = DGelu(device, DType.BF16, 96, 40, 64, seed: 71);
        var (d32, tanh32, erf32) = DGelu(device, DType.F32, 64, 16, 32, seed: 73);
        return (JudgeBf16(d16, tanh16), JudgeFp32(d32, tanh32, erf32));
    }

    /// <summary>The bf16 part's judgement: D within one bf16 ulp (plus fp32 noise) of the reference.</summary>
    public static Comparison JudgeBf16(float[] d, double[] reference) => Judge(d, reference, null, Bf16Absolute, Bf16Relative);

    /// <summary>The fp32 part's judgement: D within (1e-6 + 2e-3 |y|) of the tanh form's reference, and clearly nearer it than the erf form's.</summary>
    public static Comparison JudgeFp32(float[] d, double[] tanhForm, double[] erfForm) => Judge(d, tanhForm, erfForm, Fp32Absolute, Fp32Relative);

    /// <summary>Runs the probe and sets <paramref name="device"/>'s flag: true only when both parts pass.</summary>
    public static (Comparison Bf16, Comparison Fp32) Apply(IDeviceApi device)
    {
        var verdict = Run(device);
        device.Blas.DGeluEpilogueIsGeluNew = verdict.Bf16.Passed && verdict.Fp32.Passed;
        return verdict;
    }

    // D against the tanh form's reference within (absolute + relative |reference|); with erfForm, an infinite worst ratio
    // unless D is nearer the tanh form than the erf form by 4x in rms.
    private static Comparison Judge(float[] d, double[] tanhForm, double[]? erfForm, double absolute, double relative)
    {
        double worst = 0, maxError = 0, tanhSquares = 0, erfSquares = 0;
        int at = 0;
        for (int i = 0; i < d.Length; i++)
        {
            double error = float.IsFinite(d[i]) ? Math.Abs(d[i] - tanhForm[i]) : double.PositiveInfinity;
            maxError = Math.Max(maxError, error);
            double ratio = error / (absolute + relative * Math.Abs(tanhForm[i]));
            if (ratio > worst) (worst, at) = (ratio, i);
            tanhSquares += error * error;
            if (erfForm is not null) erfSquares += (d[i] - erfForm[i]) * (d[i] - erfForm[i]);
        }
        string detail = $"D[{at}] = {d[at]} against {tanhForm[at]:G9}";
        if (erfForm is null) return new Comparison(worst, maxError, detail);
        double tanhRms = Math.Sqrt(tanhSquares / d.Length), erfRms = Math.Sqrt(erfSquares / d.Length);
        return new Comparison(tanhRms < erfRms / 4 ? worst : double.PositiveInfinity, maxError,
            $"{detail}; rms from the tanh form's derivative {tanhRms:G3}, from the erf form's {erfRms:G3}");
    }

    /// <summary>The erf form's derivative, Phi(x) + x phi(x), in double (what an exact-GELU DGELU would multiply by).</summary>
    internal static double ErfFormDerivative(double x) => 0.5 * (1 + Erf(x / Math.Sqrt(2))) + x * Math.Exp(-x * x / 2) / Math.Sqrt(2 * Math.PI);

    // fc2's dx product in CudaLinear's terms: A = W^T [m, k] (ld m), B = dY^T [k, n] (ld k), D = C [m, n] in place (ld m),
    // aux [m, n] (ld m) spanning [-4, 4]; inputs uniform in [-1, 1) rounded to the dtype. Returns D and the two references.
    private static (float[] D, double[] TanhForm, double[] ErfForm) DGelu(IDeviceApi device, DType dtype, int m, int n, int k, int seed)
    {
        var random = new Random(seed);
        float[] Values(int count, Func<int, double> value) => [.. Enumerable.Range(0, count).Select(i => Round(dtype, value(i)))];
        float[] a = Values(m * k, _ => random.NextDouble() * 2 - 1), b = Values(k * n, _ => random.NextDouble() * 2 - 1);
        float[] c = Values(m * n, _ => random.NextDouble() * 2 - 1);
        float[] aux = Values(m * n, e => ((e % m * 5 + e / m * 3) % 17 - 8) / 2.0 + (random.NextDouble() - 0.5) * 0.25);
        using var deviceA = DeviceBuffer.Upload(device, dtype, a);
        using var deviceB = DeviceBuffer.Upload(device, dtype, b);
        using var deviceD = DeviceBuffer.Upload(device, dtype, c);
        using var deviceAux = DeviceBuffer.Upload(device, dtype, aux);
        device.Blas.LtMatmul(new LtMatmulArguments
        {
            TransposeA = BlasOperation.NoTranspose, TransposeB = BlasOperation.NoTranspose, Beta = 1,
            M = m, N = n, K = k, A = deviceA.Pointer, AType = dtype, Lda = m, B = deviceB.Pointer, BType = dtype, Ldb = k,
            C = deviceD.Pointer, Ldc = m, D = deviceD.Pointer, DType = dtype, Ldd = m, Epilogue = LtEpilogue.DGelu,
            Aux = deviceAux.Pointer, AuxLd = m,
        }, default);
        var d = deviceD.Download();
        var (sums, erfForm, tanhForm) = (new double[m * n], new double[m * n], new double[m * n]);
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++)
            {
                double sum = c[i + j * m];
                for (int p = 0; p < k; p++) sum += (double)a[i + p * m] * b[p + j * k];
                sums[i + j * m] = sum;
                erfForm[i + j * m] = sum * ErfFormDerivative(aux[i + j * m]);
            }
        CpuGelu.Backward<double>(sums, Array.ConvertAll(aux, x => (double)x), tanhForm);   // the tanh form: the CPU's gelu_new backward
        return (d, tanhForm, erfForm);
    }

    private static float Round(DType dtype, double value) =>
        dtype == DType.BF16 ? DTypes.BFloat16ToSingle(DTypes.SingleToBFloat16((float)value)) : (float)value;
}
