using System.Runtime.InteropServices;
using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Mlp;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.DeviceChecks;

/// <summary>
/// <see cref="LinearGeluOp"/> on the CUDA backend (both of its forward paths: cuBLASLt's GELU epilogue, and the GEMM with
/// its BIAS epilogue then gelu.cu's gelu_new; its backward, bias_gelu_new_backward then the dx and dW GEMMs) against the CPU backend's op
/// on the same widened inputs. The CPU computes h = x W^T + b and gelu_new(h) in fp32; a device path may round h to the
/// dtype before gelu_new (the fallback does: the GEMM stores h as an unfused Linear does) or not (the epilogue), which moves y by up to
/// gelu_new' (at most 1.13) times half an ulp of |h| of the dtype: that, on top of the forward tolerance, is y's
/// allowance. Backward is fed the device's own saved pre-activation on both sides, and the CPU rounds dh to the dtype
/// before its GEMMs as the device stores it (dBias is summed from the unrounded fp32 dh on both sides).
/// Also the probe the GPU runner uses to decide the epilogue (<see cref="GeluEpilogueProbe"/>).
/// </summary>
public static class LinearGeluChecks
{
    /// <summary>The checks of this family.</summary>
    public static IReadOnlyList<DeviceCheck> All { get; } =
    [
        Check(DType.F32, 6, 24, 40, epilogue: true, train: true),
        Check(DType.F32, 6, 24, 40, epilogue: false, train: true),
        Check(DType.F32, 5, 20, 36, epilogue: true, train: true),   // out not a multiple of 8: the aux ld rule sends it to the fallback
        Check(DType.F32, 3, 24, 40, epilogue: true, train: false),
        Check(DType.F32, 3, 24, 37, epilogue: false, train: false),
        Check(DType.BF16, 7, 32, 64, epilogue: true, train: true),
        Check(DType.BF16, 7, 32, 64, epilogue: false, train: true),
        Check(DType.BF16, 1, 32, 64, epilogue: true, train: false),
        Check(DType.F16, 4, 16, 72, epilogue: false, train: true),
        new("probe: lt gelu_aux_bias is gelu_new within bf16", ["cublasLtMatmul"], d => GeluEpilogueProbe.Run(d).Result),
        new("probe: lt dgelu is gelu_new' of the product with beta C", ["cublasLtMatmul"], GeluEpilogueProbe.DGelu),
    ];

    private static DeviceCheck Check(DType dtype, int rows, int inFeatures, int outFeatures, bool epilogue, bool train)
    {
        string path = epilogue ? "GELU epilogue asked" : "bias epilogue + gelu_new fallback";
        string kernels = $"gelu_new_{KernelName.Suffix(dtype)}";
        return new($"LinearGelu{(train ? "(+Backward)" : " inference")} {KernelName.Suffix(dtype)} x [{rows}, {inFeatures}] W [{outFeatures}, {inFeatures}], {path}",
            train ? ["cublasLtMatmul", "cublasGemmEx", kernels, $"bias_gelu_new_backward_{KernelName.Suffix(dtype)}"] : ["cublasLtMatmul", "cublasGemmEx", kernels],
            device => Run(device, dtype, rows, inFeatures, outFeatures, epilogue, train));
    }

    private static CheckResult Run(IDeviceApi device, DType dtype, int rows, int inFeatures, int outFeatures, bool epilogue, bool train)
    {
        bool was = device.Blas.GeluEpilogueIsGeluNew;
        device.Blas.GeluEpilogueIsGeluNew = epilogue;
        try
        {
            return Compare(device, dtype, rows, inFeatures, outFeatures, train);
        }
        finally
        {
            device.Blas.GeluEpilogueIsGeluNew = was;
        }
    }

    private static CheckResult Compare(IDeviceApi device, DType dtype, int rows, int inFeatures, int outFeatures, bool train)
    {
        using var backend = new CudaBackend(device, ownsDevice: false);
        using var cpu = new CpuReference();
        using var scope = TensorScope.Begin();
        int seed = 4300 + rows + inFeatures + outFeatures;
        float[] x = CpuReference.RoundTrip(dtype, TestData.Uniform(rows * inFeatures, seed, scale: 2f));
        float[] w = CpuReference.RoundTrip(dtype, TestData.Uniform(outFeatures * inFeatures, seed + 1));
        float[] b = CpuReference.RoundTrip(dtype, TestData.Uniform(outFeatures, seed + 2));
        var (cx, cw, cb) = (cpu.F32(x, rows, inFeatures), cpu.F32(w, outFeatures, inFeatures), cpu.F32(b, outFeatures));
        var (cy, cpre) = LinearGeluOp.Forward(cx, cw, cb, savePre: true);

        var (gx, gw, gb) = (Upload(backend, x, dtype, rows, inFeatures), Upload(backend, w, dtype, outFeatures, inFeatures), Upload(backend, b, dtype, outFeatures));
        var (gy, gpre) = LinearGeluOp.Forward(gx, gw, gb, savePre: train);
        float[] h = cpre!.ToSingleArray();
        double maxH = h.Select(Math.Abs).DefaultIfEmpty(0).Max();
        var forward = Tolerances.Forward(dtype);
        var yTolerance = forward with { Absolute = forward.Absolute + 0.6 * HalfUlpTimesTwo(dtype, maxH) };
        var parts = new List<CheckResult> { yTolerance.Compare("y", gy.ToSingleArray(), cpu.CastTo(dtype, cy)) };
        if (!train)
        {
            if (gpre is not null) parts.Add(new CheckResult(0, double.PositiveInfinity, "pre was saved at inference"));
            return CheckResult.Combine([.. parts]);
        }
        float[] devicePre = gpre!.ToSingleArray();
        parts.Add(forward.Compare("pre", devicePre, cpu.CastTo(dtype, cpre)));

        // Backward from the device's own pre on both sides; the CPU rounds dh to the dtype before its GEMMs, as the device does.
        float[] dy = CpuReference.RoundTrip(dtype, TestData.Uniform(rows * outFeatures, seed + 3));
        float[] dw0 = TestData.Uniform(outFeatures * inFeatures, seed + 4), db0 = TestData.Uniform(outFeatures, seed + 5);
        var (cdy, cp) = (cpu.F32(dy, rows, outFeatures), cpu.F32(devicePre, rows, outFeatures));
        var (cdw, cdb, cdx, dh) = (cpu.F32(dw0, outFeatures, inFeatures), cpu.F32(db0, outFeatures), cpu.Backend.Empty([rows, inFeatures], DType.F32),
            cpu.Backend.Empty([rows, outFeatures], DType.F32));
        Backends.Ops.Activation.GeluNewOp.Backward(cdy, cp, dh);
        var dhStored = cpu.F32(cpu.CastTo(dtype, dh), rows, outFeatures);
        Backends.Ops.Projection.LinearOp.Backward(dhStored, cx, cw, cdx, cdw, null);
        Backends.Ops.Projection.LinearOp.Backward(dh, cx, cw, null, null, cdb);

        var gdy = Upload(backend, dy, dtype, rows, outFeatures);
        var (gdw, gdb, gdx) = (Upload(backend, dw0, DType.F32, outFeatures, inFeatures), Upload(backend, db0, DType.F32, outFeatures), backend.Empty([rows, inFeatures], dtype));
        LinearGeluOp.Backward(gdy, gx, gw, gpre, gdx, gdw, gdb);
        parts.Add(Tolerances.Gradient(dtype).Compare("dx", gdx.ToSingleArray(), cpu.CastTo(dtype, cdx)));
        parts.Add(Tolerances.Gradient(DType.F32).Compare("dW (+=)", gdw.ToSingleArray(), cdw.ToSingleArray()));
        parts.Add(Tolerances.Gradient(DType.F32).Compare("dBias (+=)", gdb.ToSingleArray(), cdb.ToSingleArray()));
        return CheckResult.Combine([.. parts]);
    }

    /// <summary>One ulp of <paramref name="magnitude"/> in <paramref name="dtype"/> (twice half an ulp): where rounding h first can move gelu_new's input.</summary>
    private static double HalfUlpTimesTwo(DType dtype, double magnitude)
    {
        if (magnitude == 0) return 0;
        int mantissa = dtype switch { DType.BF16 => 7, DType.F16 => 10, _ => 23 };
        return 0.5 * Math.Pow(2, Math.Floor(Math.Log2(magnitude)) - mantissa) * 2;
    }

    private static Tensor Upload(IBackend backend, float[] values, DType dtype, params int[] shape) =>
        backend.FromBytes(MemoryMarshal.AsBytes(values.AsSpan()), DType.F32, shape, dtype);
}
