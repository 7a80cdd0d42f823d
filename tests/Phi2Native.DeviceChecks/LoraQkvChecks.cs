using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Lora;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.DeviceChecks;

/// <summary>
/// kernels/lora_qkv.cu through <see cref="LoraQkvOp"/> on a CUDA backend, against <see cref="CpuLoraQkv"/> (each present
/// module exactly LoraOp's arithmetic on its column block) on the CPU backend over the same widened values: u and y
/// forward, dx (written, or added onto a non-zero pending gradient), each present module's dA and dB (accumulated onto
/// non-zero values) backward; subsets of q, k, v with their own ranks (1, 8, 16, 64 and the odd 19 and 70: two staged
/// chunks), scalings and dropout masks (off and on, a seed each: a mask from the wrong module fails by far more than the
/// tolerance), an f32, bf16 and f16 base, and C 83 (no whole tile anywhere).
/// </summary>
public static class LoraQkvChecks
{
    private const int Batch = 3, Time = 13, C = 83;

    /// <summary>The checks of this family.</summary>
    public static IReadOnlyList<DeviceCheck> All { get; } =
    [
        Check(DType.F32, [8, 8, 8], 0.0, accumulate: false),
        Check(DType.F32, [16, 0, 1], 0.2, accumulate: true),
        Check(DType.F32, [0, 64, 0], 0.2, accumulate: false),
        Check(DType.F32, [19, 70, 0], 0.0, accumulate: true),
        Check(DType.BF16, [16, 16, 16], 0.2, accumulate: false),
        Check(DType.BF16, [1, 0, 8], 0.0, accumulate: true),
        Check(DType.BF16, [0, 19, 64], 0.2, accumulate: true),
        Check(DType.F16, [8, 16, 0], 0.2, accumulate: false),
        Check(DType.F16, [0, 0, 19], 0.0, accumulate: true),
        Check(DType.BF16, [16, 16, 16], 0.2, accumulate: true, writtenModules: 0b101),
        Check(DType.F32, [8, 0, 19], 0.0, accumulate: false, writtenModules: 0b111),
    ];

    // writtenModules: bit m set, module m's dA and dB are written (new this step) over buffers that start undefined (NaN
    // on the emulator); the reference accumulates them onto zeros.
    private static DeviceCheck Check(DType dtype, int[] ranks, double p, bool accumulate, int writtenModules = 0)
    {
        string suffix = KernelName.Suffix(dtype);
        string present = string.Join(" ", ranks.Select((r, m) => r > 0 ? $"{"qkv"[m]} r={r}" : null).Where(s => s is not null));
        return new($"lora qkv {suffix} {present} p={p:R} x [{Batch}, {Time}, {C}]{(accumulate ? ", dx +=" : "")}{(writtenModules != 0 ? $", dA dB = for modules {writtenModules}" : "")}",
            [$"lora_qkv_down_{suffix}", $"lora_qkv_up_{suffix}", $"lora_qkv_up_backward_{suffix}", $"lora_qkv_weight_grad_{suffix}", $"lora_qkv_down_backward_{suffix}"],
            device => Run(device, dtype, ranks, p, accumulate, writtenModules));
    }

    private static CheckResult Run(IDeviceApi device, DType dtype, int[] ranks, double p, bool accumulate, int writtenModules)
    {
        using var cuda = new CudaBackend(device, ownsDevice: false);
        using var cpu = new CpuReference();
        using var scope = TensorScope.Begin();
        int rows = Batch * Time;
        float[] x = CpuReference.RoundTrip(dtype, TestData.Uniform(rows * C, seed: 971));
        float[] baseOutput = CpuReference.RoundTrip(dtype, TestData.Uniform(rows * 3 * C, seed: 972, scale: 2f));
        float[] dy = CpuReference.RoundTrip(dtype, TestData.Uniform(rows * 3 * C, seed: 973));
        float[] dx0 = CpuReference.RoundTrip(dtype, TestData.Uniform(rows * C, seed: 974));
        int[] xShape = [Batch, Time, C], outShape = [Batch, Time, 3 * C];
        Tensor OnDevice(DType stored, float[] values, params int[] shape) => cuda.FromBytes(DeviceBuffer.Encode(stored, values), stored, shape, stored);

        var deviceModules = new LoraQkvModule?[3];
        var cpuModules = new LoraQkvModule?[3];
        var gradients = new (float[] A, float[] B)[3];
        for (int m = 0; m < 3; m++)
        {
            int r = ranks[m];
            if (r == 0) continue;
            float[] a = TestData.Uniform(r * C, seed: 980 + m, scale: 1f / MathF.Sqrt(C));
            float[] b = TestData.Uniform(C * r, seed: 984 + m, scale: 0.5f);
            gradients[m] = (TestData.Uniform(r * C, seed: 988 + m), TestData.Uniform(C * r, seed: 992 + m));
            var branch = new LoraBranch(0.5 + m, p, 0xC0FFEEUL + (ulong)m);
            deviceModules[m] = new LoraQkvModule(OnDevice(DType.F32, a, r, C), OnDevice(DType.F32, b, C, r), branch);
            cpuModules[m] = new LoraQkvModule(cpu.F32(a, r, C), cpu.F32(b, C, r), branch);
        }

        var gx = OnDevice(dtype, x, xShape);
        var yDevice = LoraQkvOp.Forward(gx, OnDevice(dtype, baseOutput, outShape), deviceModules, out var uDevice);
        var cx = cpu.F32(x, xShape);
        var yCpu = LoraQkvOp.Forward(cx, cpu.F32(baseOutput, outShape), cpuModules, out var uCpu);
        var parts = new List<CheckResult>
        {
            Tolerances.Gradient(DType.F32).Compare("u", uDevice.ToSingleArray(), uCpu.ToSingleArray()),
            Tolerances.Forward(dtype).Compare("y", yDevice.ToSingleArray(), CpuReference.RoundTrip(dtype, yCpu.ToSingleArray())),
        };

        var dxDevice = accumulate ? OnDevice(dtype, dx0, xShape) : cuda.Empty(xShape, dtype);
        var dxCpu = accumulate ? cpu.F32(dx0, xShape) : cpu.Backend.Empty(xShape, DType.F32);
        Tensor?[] dADevice = new Tensor?[3], dBDevice = new Tensor?[3], dACpu = new Tensor?[3], dBCpu = new Tensor?[3];
        for (int m = 0; m < 3; m++)
        {
            if (ranks[m] == 0) continue;
            bool written = ((writtenModules >> m) & 1) != 0;
            dADevice[m] = written ? cuda.Empty([ranks[m], C], DType.F32) : OnDevice(DType.F32, gradients[m].A, ranks[m], C);
            dBDevice[m] = written ? cuda.Empty([C, ranks[m]], DType.F32) : OnDevice(DType.F32, gradients[m].B, C, ranks[m]);
            dACpu[m] = written ? cpu.Backend.Zeros([ranks[m], C], DType.F32) : cpu.F32(gradients[m].A, ranks[m], C);
            dBCpu[m] = written ? cpu.Backend.Zeros([C, ranks[m]], DType.F32) : cpu.F32(gradients[m].B, C, ranks[m]);
        }
        LoraQkvOp.Backward(OnDevice(dtype, dy, outShape), gx, uDevice, deviceModules, dxDevice, dADevice, dBDevice, accumulate,
            accumulateA: 0b111 & ~writtenModules, accumulateB: 0b111 & ~writtenModules);
        LoraQkvOp.Backward(cpu.F32(dy, outShape), cx, uCpu, cpuModules, dxCpu, dACpu, dBCpu, accumulate);
        parts.Add(Tolerances.Gradient(dtype).Compare("dx", dxDevice.ToSingleArray(), CpuReference.RoundTrip(dtype, dxCpu.ToSingleArray())));
        for (int m = 0; m < 3; m++)
        {
            if (ranks[m] == 0) continue;
            parts.Add(Tolerances.Gradient(DType.F32).Compare($"d{"qkv"[m]}.A", dADevice[m]!.ToSingleArray(), dACpu[m]!.ToSingleArray()));
            parts.Add(Tolerances.Gradient(DType.F32).Compare($"d{"qkv"[m]}.B", dBDevice[m]!.ToSingleArray(), dBCpu[m]!.ToSingleArray()));
        }
        return CheckResult.Combine([.. parts]);
    }
}
