using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Lora;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.DeviceChecks;

/// <summary>
/// kernels/lora.cu through <see cref="LoraOp"/> on a CUDA backend over the device, against <see cref="CpuLora"/> (the
/// unfused ops' arithmetic) on the CPU backend over the same widened values: u and y forward, dx, dA and dB backward (dA
/// and dB accumulated onto non-zero values), at ranks 1, 8, 16, 64 and 70 (two staged chunks of lora_up), with the input
/// dropout off and on (the same seed both sides: a mask that differs fails by far more than the tolerance), an f32, bf16
/// and f16 base, and sizes that fill no tile (x [3, 13, 97], out 83). A 16-bit output is compared with the CPU's fp32
/// result rounded once; sums run in another order, hence the tolerances.
/// </summary>
public static class LoraChecks
{
    private const int Batch = 3, Time = 13, In = 97, Out = 83;
    private const double Scaling = 2.0;
    private const ulong Seed = 0x9E3779B97F4A7C15UL;

    /// <summary>The checks of this family.</summary>
    public static IReadOnlyList<DeviceCheck> All { get; } =
    [
        .. from dtype in new[] { DType.F32, DType.BF16, DType.F16 }
           from rank in new[] { 1, 8, 16, 64, 70 }
           from p in new[] { 0.0, 0.2 }
           select Check(dtype, rank, p, backward: false),
        .. from dtype in new[] { DType.F32, DType.BF16 }
           from rank in new[] { 1, 8, 16, 64 }
           from p in new[] { 0.0, 0.2 }
           select Check(dtype, rank, p, backward: true),
        Check(DType.F16, 70, 0.2, backward: true),
        Check(DType.F32, 16, 0.2, backward: true, accumulate: true),
        Check(DType.BF16, 8, 0.2, backward: true, accumulate: true),
        Check(DType.F16, 1, 0.0, backward: true, accumulate: true),
        Check(DType.BF16, 16, 0.2, backward: true, writeAdapter: true),
        Check(DType.BF16, 70, 0.0, backward: true, writeAdapter: true),
        Check(DType.F32, 8, 0.2, backward: true, writeAdapter: true),
        .. from dtype in new[] { DType.F32, DType.BF16, DType.F16 }
           from rank in new[] { 1, 16, 70 }
           from p in new[] { 0.0, 0.2 }
           where dtype != DType.F16 || rank == 16
           select LoraLinearGeluCheck.Check(dtype, rank, p, train: true),
        LoraLinearGeluCheck.Check(DType.BF16, 8, 0.0, train: false),
    ];

    private static DeviceCheck Check(DType dtype, int rank, double p, bool backward, bool accumulate = false, bool writeAdapter = false)
    {
        string suffix = KernelName.Suffix(dtype);
        string[] kernels = backward
            ? [$"lora_weight_grad_{suffix}", $"lora_up_backward_{suffix}", $"lora_down_backward_{suffix}"]
            : [$"lora_down_{suffix}", $"lora_up_{suffix}"];
        return new($"lora{(backward ? " backward" : "")} {suffix} r={rank} p={p:R} x [{Batch}, {Time}, {In}] out {Out}{(accumulate ? ", dx +=" : "")}{(writeAdapter ? ", dA dB =" : "")}",
            kernels, device => Run(device, dtype, rank, p, backward, accumulate, writeAdapter));
    }

    // accumulate: dx starts non-zero on both sides and the branch's dx is added into it (a pending gradient).
    // writeAdapter: dA and dB are written (a gradient new this step) over a buffer that starts undefined (NaN on the
    // emulator); the reference accumulates onto zeros.
    private static CheckResult Run(IDeviceApi device, DType dtype, int rank, double p, bool backward, bool accumulate, bool writeAdapter)
    {
        using var cuda = new CudaBackend(device, ownsDevice: false);
        using var cpu = new CpuReference();
        using var scope = TensorScope.Begin();
        int rows = Batch * Time;
        var branch = new LoraBranch(Scaling, p, Seed);
        float[] x = CpuReference.RoundTrip(dtype, TestData.Uniform(rows * In, seed: 901));
        float[] baseOutput = CpuReference.RoundTrip(dtype, TestData.Uniform(rows * Out, seed: 902, scale: 2f));
        float[] a = TestData.Uniform(rank * In, seed: 903, scale: 1f / MathF.Sqrt(In));
        float[] b = TestData.Uniform(Out * rank, seed: 904, scale: 0.5f);
        int[] xShape = [Batch, Time, In], outShape = [Batch, Time, Out], aShape = [rank, In], bShape = [Out, rank];
        Tensor OnDevice(DType stored, float[] values, int[] shape) => cuda.FromBytes(DeviceBuffer.Encode(stored, values), stored, shape, stored);

        var yDevice = LoraOp.Forward(OnDevice(dtype, x, xShape), OnDevice(dtype, baseOutput, outShape), OnDevice(DType.F32, a, aShape),
            OnDevice(DType.F32, b, bShape), branch, out var uDevice);
        var yCpu = LoraOp.Forward(cpu.F32(x, xShape), cpu.F32(baseOutput, outShape), cpu.F32(a, aShape), cpu.F32(b, bShape), branch, out var uCpu);
        var forward = CheckResult.Combine(
            Tolerances.Gradient(DType.F32).Compare("u", uDevice.ToSingleArray(), uCpu.ToSingleArray()),
            Tolerances.Forward(dtype).Compare("y", yDevice.ToSingleArray(), CpuReference.RoundTrip(dtype, yCpu.ToSingleArray())));
        if (!backward) return forward;

        float[] dy = CpuReference.RoundTrip(dtype, TestData.Uniform(rows * Out, seed: 905));
        float[] aGradient = TestData.Uniform(rank * In, seed: 906), bGradient = TestData.Uniform(Out * rank, seed: 907);
        float[] dx0 = CpuReference.RoundTrip(dtype, TestData.Uniform(rows * In, seed: 908));
        var dxDevice = accumulate ? OnDevice(dtype, dx0, xShape) : cuda.Empty(xShape, dtype);
        var dADevice = writeAdapter ? cuda.Empty(aShape, DType.F32) : OnDevice(DType.F32, aGradient, aShape);
        var dBDevice = writeAdapter ? cuda.Empty(bShape, DType.F32) : OnDevice(DType.F32, bGradient, bShape);
        LoraOp.Backward(OnDevice(dtype, dy, outShape), OnDevice(dtype, x, xShape), OnDevice(DType.F32, a, aShape), OnDevice(DType.F32, b, bShape),
            uDevice, branch, dxDevice, dADevice, dBDevice, accumulate, accumulateA: !writeAdapter, accumulateB: !writeAdapter);
        var dxCpu = accumulate ? cpu.F32(dx0, xShape) : cpu.Backend.Empty(xShape, DType.F32);
        var dACpu = writeAdapter ? cpu.Backend.Zeros(aShape, DType.F32) : cpu.F32(aGradient, aShape);
        var dBCpu = writeAdapter ? cpu.Backend.Zeros(bShape, DType.F32) : cpu.F32(bGradient, bShape);
        LoraOp.Backward(cpu.F32(dy, outShape), cpu.F32(x, xShape), cpu.F32(a, aShape), cpu.F32(b, bShape), uCpu, branch, dxCpu, dACpu, dBCpu, accumulate);
        return CheckResult.Combine(
            forward,
            Tolerances.Gradient(dtype).Compare("dx", dxDevice.ToSingleArray(), CpuReference.RoundTrip(dtype, dxCpu.ToSingleArray())),
            Tolerances.Gradient(DType.F32).Compare("dA", dADevice.ToSingleArray(), dACpu.ToSingleArray()),
            Tolerances.Gradient(DType.F32).Compare("dB", dBDevice.ToSingleArray(), dBCpu.ToSingleArray()));
    }
}
