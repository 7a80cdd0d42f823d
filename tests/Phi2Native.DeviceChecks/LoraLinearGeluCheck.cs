using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Activation;
using Phi2Native.Backends.Ops.Lora;
using Phi2Native.Backends.Ops.Projection;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.DeviceChecks;

/// <summary>
/// fc1 with LoRA and gelu_new (<see cref="LoraLinearGeluOp"/>: the base GEMM, lora_down, lora_up_gelu; backward
/// bias_gelu_new_backward, the branch, the base's dx added into the branch's) on a CUDA backend, against the unfused CPU
/// ops on the same widened values, rounded where the device stores: h = x W^T + b (LinearOp, rounded to the dtype), pre
/// = h + scaling u B^T (LoraOp, rounded), y = gelu_new(pre) (GeluNewOp). Backward from the device's own pre on both
/// sides, the CPU rounding dh to the dtype before the products as the device stores it (dBias from the unrounded dh on
/// both sides), and the branch's dx before the base's product is added to it (beta 1); dW, dBias, dA and dB accumulated
/// onto non-zero values. Part of the "lora" family.
/// </summary>
internal static class LoraLinearGeluCheck
{
    private const int Batch = 3, Time = 13, In = 97, Out = 83;
    private const double Scaling = 2.0;
    private const ulong Seed = 0x5DEECE66DUL;

    public static DeviceCheck Check(DType dtype, int rank, double p, bool train)
    {
        string suffix = KernelName.Suffix(dtype);
        string[] kernels = train
            ? ["cublasLtMatmul", $"lora_down_{suffix}", $"lora_up_gelu_{suffix}", $"bias_gelu_new_backward_{suffix}", $"lora_weight_grad_{suffix}",
                $"lora_up_backward_{suffix}", $"lora_down_backward_{suffix}", "cublasGemmEx"]
            : ["cublasLtMatmul", $"lora_down_{suffix}", $"lora_up_gelu_{suffix}"];
        return new($"lora fc1+gelu{(train ? " (+backward)" : " inference")} {suffix} r={rank} p={p:R} x [{Batch}, {Time}, {In}] W [{Out}, {In}]", kernels,
            device => Run(device, dtype, rank, p, train));
    }

    private static CheckResult Run(IDeviceApi device, DType dtype, int rank, double p, bool train)
    {
        using var cuda = new CudaBackend(device, ownsDevice: false);
        using var cpu = new CpuReference();
        using var scope = TensorScope.Begin();
        int rows = Batch * Time;
        var branch = new LoraBranch(Scaling, p, Seed);
        float[] x = CpuReference.RoundTrip(dtype, TestData.Uniform(rows * In, seed: 951, scale: 2f));
        float[] w = CpuReference.RoundTrip(dtype, TestData.Uniform(Out * In, seed: 952, scale: 1f / MathF.Sqrt(In)));
        float[] bias = CpuReference.RoundTrip(dtype, TestData.Uniform(Out, seed: 953));
        float[] a = TestData.Uniform(rank * In, seed: 954, scale: 1f / MathF.Sqrt(In));
        float[] b = TestData.Uniform(Out * rank, seed: 955, scale: 0.5f);
        int[] xShape = [Batch, Time, In], outShape = [Batch, Time, Out], wShape = [Out, In], aShape = [rank, In], bShape = [Out, rank];
        Tensor OnDevice(DType stored, float[] values, params int[] shape) => cuda.FromBytes(DeviceBuffer.Encode(stored, values), stored, shape, stored);
        Tensor Stored(Tensor cpuTensor) => cpu.F32(cpu.CastTo(dtype, cpuTensor), [.. cpuTensor.Shape]);

        var (cx, cw, cb, ca, cB) = (cpu.F32(x, xShape), cpu.F32(w, wShape), cpu.F32(bias, Out), cpu.F32(a, aShape), cpu.F32(b, bShape));
        var h = Stored(LinearOp.Forward(cx, cw, cb));
        var pre = LoraOp.Forward(cx, h, ca, cB, branch, out var cu);
        var y = GeluNewOp.Forward(Stored(pre));

        var (gx, gw, gbias, ga, gB) = (OnDevice(dtype, x, xShape), OnDevice(dtype, w, wShape), OnDevice(dtype, bias, Out), OnDevice(DType.F32, a, aShape),
            OnDevice(DType.F32, b, bShape));
        var (gy, gpre, gu) = LoraLinearGeluOp.Forward(gx, gw, gbias, ga, gB, branch, savePre: train);
        // The two sides' h (fp32 sums in another order) may round one ulp of the dtype apart, and pre = h + update keeps
        // that ulp of |h| where the two cancel: pre's allowance, times gelu_new' (at most 1.13) y's, on top of the
        // forward tolerance (LinearGeluChecks allows the same).
        var forward = Tolerances.Forward(dtype);
        double hUlp = Ulp(dtype, h.ToSingleArray().Select(Math.Abs).DefaultIfEmpty(0).Max());
        var preTolerance = forward with { Absolute = forward.Absolute + hUlp };
        var yTolerance = forward with { Absolute = forward.Absolute + 1.13 * hUlp };
        var parts = new List<CheckResult>
        {
            Tolerances.Gradient(DType.F32).Compare("u", gu.ToSingleArray(), cu.ToSingleArray()),
            yTolerance.Compare("y", gy.ToSingleArray(), cpu.CastTo(dtype, y)),
        };
        if (!train)
        {
            if (gpre is not null) parts.Add(new CheckResult(0, double.PositiveInfinity, "pre was saved at inference"));
            return CheckResult.Combine([.. parts]);
        }
        float[] devicePre = gpre!.ToSingleArray();
        parts.Add(preTolerance.Compare("pre", devicePre, cpu.CastTo(dtype, pre)));

        float[] dy = CpuReference.RoundTrip(dtype, TestData.Uniform(rows * Out, seed: 956));
        float[] dw0 = TestData.Uniform(Out * In, seed: 957), dbias0 = TestData.Uniform(Out, seed: 958);
        float[] dA0 = TestData.Uniform(rank * In, seed: 959), dB0 = TestData.Uniform(Out * rank, seed: 960);
        var dh = cpu.Backend.Empty(outShape, DType.F32);
        GeluNewOp.Backward(cpu.F32(dy, outShape), cpu.F32(devicePre, outShape), dh);
        var dhStored = Stored(dh);
        var (cdx, cdw, cdbias, cdA, cdB) = (cpu.Backend.Empty(xShape, DType.F32), cpu.F32(dw0, wShape), cpu.F32(dbias0, Out), cpu.F32(dA0, aShape), cpu.F32(dB0, bShape));
        // The branch's dx is stored (rounded) first and the base's product added to it in fp32 and rounded once (beta 1).
        LoraOp.Backward(dhStored, cx, ca, cB, cu, branch, cdx, cdA, cdB);
        cdx = Stored(cdx);
        LinearOp.Backward(dhStored, cx, cw, cdx, cdw, null, accumulateDx: true);
        LinearOp.Backward(dh, cx, cw, null, null, cdbias);

        var (gdx, gdw, gdbias, gdA, gdB) = (cuda.Empty(xShape, dtype), OnDevice(DType.F32, dw0, wShape), OnDevice(DType.F32, dbias0, Out),
            OnDevice(DType.F32, dA0, aShape), OnDevice(DType.F32, dB0, bShape));
        LoraLinearGeluOp.Backward(OnDevice(dtype, dy, outShape), gx, gw, ga, gB, gu, gpre, branch, gdx, gdw, gdbias, gdA, gdB);
        // dW, dA and dB are sums over the stored dh: where the two sides' fp32 dh straddle a rounding boundary of the
        // dtype they round one ulp apart, so those sums are held to the dtype's gradient tolerance (fp32: fp32's).
        var fromDh = Tolerances.Gradient(dtype);
        // dW, dB and dA are sums over rows of products with dh rounded to the dtype (dA through du = scaling dh B): one
        // ulp of each rounded dh moves them by at most one ulp's fraction of the sum of the absolute terms, on top (their
        // rounding bounds, as AttentionTensorCoreGradient's). fp32: none.
        double ulp = Ulp(dtype, 1);
        float[] dhAbs = [.. dh.ToSingleArray().Select(MathF.Abs)], xAbs = [.. x.Select(MathF.Abs)], uAbs = [.. cu.ToSingleArray().Select(MathF.Abs)];
        float[] duAbs = new float[rows * rank];
        for (int n = 0; n < rows; n++)
            for (int j = 0; j < rank; j++)
            {
                double sum = 0;
                for (int o = 0; o < Out; o++) sum += dhAbs[n * Out + o] * Math.Abs(b[o * rank + j]);
                duAbs[n * rank + j] = (float)(Scaling * sum);
            }
        Tolerance Bounded(double bound) => fromDh with { Absolute = fromDh.Absolute + ulp * bound };
        // dx [n, i] = sum_o dh W + sum_j du A through the mask.
        double dxBound = 0;
        for (int n = 0; n < rows; n++)
            for (int i = 0; i < In; i++)
            {
                double sum = 0;
                for (int o = 0; o < Out; o++) sum += dhAbs[n * Out + o] * Math.Abs(w[o * In + i]);
                for (int j = 0; j < rank; j++) sum += duAbs[n * rank + j] * Math.Abs(a[j * In + i]) / (1 - p);
                dxBound = Math.Max(dxBound, sum);
            }
        parts.Add(Bounded(dxBound).Compare("dx", gdx.ToSingleArray(), cpu.CastTo(dtype, cdx)));
        parts.Add(Bounded(TermBound(dhAbs, Out, xAbs, In, rows)).Compare("dW (+=)", gdw.ToSingleArray(), cdw.ToSingleArray()));
        parts.Add(Tolerances.Gradient(DType.F32).Compare("dBias (+=)", gdbias.ToSingleArray(), cdbias.ToSingleArray()));
        parts.Add(Bounded(TermBound(duAbs, rank, xAbs, In, rows) / (1 - p)).Compare("dA (+=)", gdA.ToSingleArray(), cdA.ToSingleArray()));
        parts.Add(Bounded(Scaling * TermBound(dhAbs, Out, uAbs, rank, rows)).Compare("dB (+=)", gdB.ToSingleArray(), cdB.ToSingleArray()));
        return CheckResult.Combine([.. parts]);
    }

    /// <summary>max over (a, b) of sum_n left[n, a] right[n, b], of non-negative [rows, widthLeft] and [rows, widthRight].</summary>
    private static double TermBound(float[] left, int widthLeft, float[] right, int widthRight, int rows)
    {
        double bound = 0;
        for (int a = 0; a < widthLeft; a++)
            for (int c = 0; c < widthRight; c++)
            {
                double sum = 0;
                for (int n = 0; n < rows; n++) sum += left[n * widthLeft + a] * right[n * widthRight + c];
                bound = Math.Max(bound, sum);
            }
        return bound;
    }

    /// <summary>One ulp of <paramref name="magnitude"/> in <paramref name="dtype"/> (0 for fp32: both sides compute h in fp32).</summary>
    private static double Ulp(DType dtype, double magnitude)
    {
        if (magnitude == 0 || dtype == DType.F32) return 0;
        int mantissa = dtype == DType.BF16 ? 7 : 10;
        return Math.Pow(2, Math.Floor(Math.Log2(magnitude)) - mantissa);
    }
}
