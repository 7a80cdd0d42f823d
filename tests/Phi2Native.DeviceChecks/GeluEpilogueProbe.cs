using Phi2Native.Backends.Ops.Activation;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.DeviceChecks;

/// <summary>The probe's outcome: whether cuBLASLt's GELU is gelu_new within bf16, and the comparison behind it.</summary>
/// <param name="IsGeluNew">The verdict: true sends LinearGeluOp through the GELU epilogue on this device.</param>
/// <param name="Result">The comparison (always "passed" when the probe could run: a false verdict is an answer, not a failure).</param>
/// <param name="Comparison">The comparison itself, held to bf16's tolerance; its Passed is the verdict.</param>
public sealed record GeluEpilogueVerdict(bool IsGeluNew, CheckResult Result, CheckResult Comparison);

/// <summary>
/// Decides <see cref="IBlas.GeluEpilogueIsGeluNew"/> for a device, in two parts that must both pass:
/// <list type="bullet">
/// <item>bf16, the dtype the model runs in: one cublasLtMatmul with GELU_AUX_BIAS at an MLP-like shape (m 256 = fc1's
/// out-features, n 40 rows, k 80), each element of D against the CPU backend's gelu_new (GeluNewOp, fp32) of its own aux
/// value. cuBLASLt may apply the GELU to h before rounding it to the aux's bf16, so D must lie within one bf16 ulp of
/// gelu_new over the interval of h that rounds to the aux value (aux +- half an ulp), not merely of gelu_new(aux).
/// Comparing against the device's own aux isolates the GELU from the product; aux spans about [-8, 8].</item>
/// <item>fp32: BlasChecks' "lt gelu_aux_bias is the tanh form" (D nearer the tanh form than the erf form by 4x in rms),
/// which bf16 cannot resolve.</item>
/// </list>
/// On the emulator the epilogue is gelu_new by definition; on a GPU this is the only evidence, and the GPU runner runs
/// it before the checks and records the verdict.
/// </summary>
public static class GeluEpilogueProbe
{
    /// <summary>Runs the probe on <paramref name="device"/> (it does not change the device's flag; <see cref="Apply"/> does).</summary>
    public static GeluEpilogueVerdict Run(IDeviceApi device)
    {
        const int m = 256, n = 40, k = 80;
        float[] a = NaiveBlas.Random(k, m, k, DType.BF16, 61), b = NaiveBlas.Random(k, n, k, DType.BF16, 62);
        float[] bias = CpuReference.RoundTrip(DType.BF16, [.. Enumerable.Range(0, m).Select(i => (i % 13 - 6) * 0.5f)]);
        using var deviceA = DeviceBuffer.Upload(device, DType.BF16, a);
        using var deviceB = DeviceBuffer.Upload(device, DType.BF16, b);
        using var deviceBias = DeviceBuffer.Upload(device, DType.BF16, bias);
        using var deviceD = DeviceBuffer.Allocate(device, DType.BF16, m * n);
        using var deviceAux = DeviceBuffer.Allocate(device, DType.BF16, m * n);
        // fc1's product in CudaLinear's terms: A = W stored [k, m] read transposed, B = x^T [k, n].
        device.Blas.LtMatmul(new LtMatmulArguments
        {
            TransposeA = BlasOperation.Transpose, TransposeB = BlasOperation.NoTranspose,
            M = m, N = n, K = k, A = deviceA.Pointer, AType = DType.BF16, Lda = k, B = deviceB.Pointer, BType = DType.BF16, Ldb = k,
            D = deviceD.Pointer, DType = DType.BF16, Ldd = m, Epilogue = LtEpilogue.GeluAuxBias,
            Bias = deviceBias.Pointer, BiasType = DType.BF16, Aux = deviceAux.Pointer, AuxLd = m,
        }, default);
        float[] d = deviceD.Download(), aux = deviceAux.Download();
        var bf16 = WithinRoundingOfAux(d, aux);
        var form = BlasChecks.GeluForm(device);
        var comparison = CheckResult.Combine(bf16, form);
        string verdict = comparison.Passed
            ? "verdict: GELU_AUX_BIAS is gelu_new within bf16; LinearGelu takes the epilogue"
            : "verdict: GELU_AUX_BIAS is NOT gelu_new within bf16; LinearGelu keeps the BIAS epilogue + gelu_new";
        return new GeluEpilogueVerdict(comparison.Passed, comparison with { WorstRatio = Math.Min(comparison.WorstRatio, 1.0), Detail = $"{verdict} ({comparison})" },
            comparison);
    }

    /// <summary>Runs the probe and sets <paramref name="device"/>'s flag to its verdict; returns the verdict.</summary>
    public static GeluEpilogueVerdict Apply(IDeviceApi device)
    {
        var verdict = Run(device);
        device.Blas.GeluEpilogueIsGeluNew = verdict.IsGeluNew;
        return verdict;
    }

    // Each d[i] against [min, max] of the CPU's gelu_new at aux[i] - half an ulp, aux[i], aux[i] + half an ulp (gelu_new is
    // monotonic on each side of its minimum near -0.75, and the interval is narrow), widened by the bf16 tolerance.
    private static CheckResult WithinRoundingOfAux(float[] d, float[] aux)
    {
        var tolerance = Tolerances.Forward(DType.BF16);
        int count = aux.Length;
        var points = new float[3 * count];
        for (int i = 0; i < count; i++)
        {
            double half = aux[i] == 0 ? 0 : 0.5 * Math.Pow(2, Math.Floor(Math.Log2(Math.Abs(aux[i]))) - 7);
            (points[3 * i], points[3 * i + 1], points[3 * i + 2]) = ((float)(aux[i] - half), aux[i], (float)(aux[i] + half));
        }
        using var cpu = new CpuReference();
        using var x = cpu.F32(points, points.Length);
        using var y = GeluNewOp.Forward(x);
        float[] g = y.ToSingleArray();
        double worst = 0, maxError = 0;
        int at = -1;
        for (int i = 0; i < count; i++)
        {
            double lo = Math.Min(g[3 * i], Math.Min(g[3 * i + 1], g[3 * i + 2])), hi = Math.Max(g[3 * i], Math.Max(g[3 * i + 1], g[3 * i + 2]));
            double error = d[i] < lo ? lo - d[i] : d[i] > hi ? d[i] - hi : 0;
            if (!float.IsFinite(d[i])) error = double.PositiveInfinity;
            double ratio = error / (tolerance.Absolute + tolerance.Relative * Math.Max(Math.Abs(lo), Math.Abs(hi)));
            maxError = Math.Max(maxError, error);
            if (ratio > worst || at < 0) (worst, at) = (ratio, i);
        }
        return new CheckResult(maxError, worst, $"D[{at}] = {d[at]} for aux {aux[at]} (gelu_new over its rounding interval, {tolerance})");
    }
}
