using System.Runtime.InteropServices;
using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Dropout;
using Phi2Native.Backends.Ops.Residual;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.DeviceChecks;

/// <summary>
/// kernels/residual.cu through <see cref="ParallelResidualOp"/> on a CUDA backend over the device, against the unfused
/// ops on the CPU backend (two <see cref="DropoutOp"/>s and two adds, in HF's order) over the same widened values:
/// equal bit for bit in F32, and in BF16 and F16 equal to that F32 result rounded once (the fused kernel's one
/// rounding). Backward: each branch's gradient is the output's through its own mask, bit for bit, with both branches
/// or one; p = 0 is the inference sum.
/// </summary>
public static class ParallelResidualChecks
{
    /// <summary>The checks of this family.</summary>
    public static IReadOnlyList<DeviceCheck> All { get; } =
    [
        .. new[] { DType.F32, DType.BF16, DType.F16 }.Select(d => Check(d, 2 * 80 * 32 + 7, 0.1, backward: false)),
        Check(DType.F32, 1001, 0, backward: false),
        Check(DType.F32, 2 * 80 * 32 + 7, 0.1, backward: true),
        Check(DType.BF16, 1001, 0.3, backward: true, onlyMlp: true),
    ];

    private const ulong AttentionSeed = 0x8000000000000001UL, MlpSeed = 1234567UL;

    private static DeviceCheck Check(DType dtype, int n, double p, bool backward, bool onlyMlp = false)
    {
        string kernel = $"parallel_residual{(backward ? "_backward" : "")}_{KernelName.Suffix(dtype)}";
        return new($"{kernel} n={n} p={p:R}{(onlyMlp ? " (mlp's gradient only)" : "")}", [kernel], device => Run(device, dtype, n, p, backward, onlyMlp));
    }

    private static CheckResult Run(IDeviceApi device, DType dtype, int n, double p, bool backward, bool onlyMlp)
    {
        using var cuda = new CudaBackend(device, ownsDevice: false);
        using var cpu = new CpuReference();
        using var scope = TensorScope.Begin();
        float[][] inputs = [.. Enumerable.Range(0, 3).Select(k => CpuReference.RoundTrip(dtype, TestData.Uniform(n, seed: 710 + k, scale: 2f)))];
        Tensor OnDevice(float[] values) => cuda.FromBytes(DeviceBuffer.Encode(dtype, values), dtype, [n], dtype);
        Tensor OnCpu(float[] values) => cpu.F32(values, n);
        if (!backward)
        {
            var actual = ParallelResidualOp.Forward(OnDevice(inputs[0]), OnDevice(inputs[1]), OnDevice(inputs[2]), p, AttentionSeed, MlpSeed);
            var unfused = cpu.Backend.Add(
                cpu.Backend.Add(DropoutOp.Forward(OnCpu(inputs[0]), p, AttentionSeed), DropoutOp.Forward(OnCpu(inputs[1]), p, MlpSeed)),
                OnCpu(inputs[2]));
            return CheckResult.CompareBits("y", actual.ToSingleArray(), CpuReference.RoundTrip(dtype, unfused.ToSingleArray()));
        }
        var dy = inputs[0];
        var dAttention = onlyMlp ? null : cuda.Empty([n], dtype);
        var dMlp = cuda.Empty([n], dtype);
        ParallelResidualOp.Backward(OnDevice(dy), dAttention, dMlp, p, AttentionSeed, MlpSeed);
        var results = new List<CheckResult>
        {
            CheckResult.CompareBits("dMlp", dMlp.ToSingleArray(), CpuReference.RoundTrip(dtype, DropoutOp.Forward(OnCpu(dy), p, MlpSeed).ToSingleArray())),
        };
        if (dAttention is not null)
            results.Add(CheckResult.CompareBits("dAttention", dAttention.ToSingleArray(), CpuReference.RoundTrip(dtype, DropoutOp.Forward(OnCpu(dy), p, AttentionSeed).ToSingleArray())));
        return CheckResult.Combine([.. results]);
    }
}
