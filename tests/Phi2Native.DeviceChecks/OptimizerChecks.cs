using System.Runtime.InteropServices;
using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Optimizer;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.DeviceChecks;

/// <summary>
/// kernels/optimizer.cu through <see cref="AdamWOp"/> and <see cref="GradientCheckOp"/> on a CUDA backend over the
/// device, against the CPU backend. AdamW: several parameters in one launch (one crossing a chunk boundary, one resumed
/// from saved moments at a later step, weight decay on some, special gradients), several steps with a schedule, with
/// and without a clip scale: parameters and moments equal the CPU's bit for bit after every step, gradients come back
/// untouched, and a step the status marks skipped changes nothing. The check: sums of squares within fp32 rounding
/// (other chunking), the losses' sum exactly, the first non-finite tensor and the verdict exactly.
/// </summary>
public static class OptimizerChecks
{
    private sealed record Parameter(int Elements, double WeightDecay, int FirstStep = 1, bool Resumed = false, bool SpecialGradients = false);

    private static readonly Parameter[] Parameters =
    [
        new(1003, 0.01),
        new(1, 0.1),
        new(OptimizerKernels.ChunkElements + 17, 0),
        new(513, 0.1, FirstStep: 7, Resumed: true),
        new(300, 0.01, SpecialGradients: true),
    ];

    /// <summary>The checks of this family.</summary>
    public static IReadOnlyList<DeviceCheck> All { get; } =
    [
        new("adamw_chunks_f32: 5 parameters, 3 steps, no status", ["adamw_chunks_f32"], device => AdamW(device, clipScale: null)),
        new("adamw_chunks_f32: 5 parameters, 3 steps, clip scale 0.37", ["adamw_chunks_f32"], device => AdamW(device, clipScale: 0.37)),
        new("adamw_chunks_f32: a skipped step changes nothing", ["adamw_chunks_f32"], Skipped),
        new("gradient check f32/bf16/f16, nulls, 2 losses, clipping", ["chunk_sum_of_squares_f32", "chunk_sum_of_squares_bf16", "chunk_sum_of_squares_f16", "step_status"],
            device => Check(device, special: null)),
        new("gradient check: the first non-finite tensor (NaN in 2, inf in 4)", ["chunk_sum_of_squares_f32", "step_status"], device => Check(device, special: "tensor")),
        new("gradient check: a NaN loss skips with no tensor named", ["chunk_sum_of_squares_f32", "step_status"], device => Check(device, special: "loss")),
        new("gradient check: a window of 3 steps, step 2's NaN loss halts step 3", ["chunk_sum_of_squares_f32", "step_status"], Window),
    ];

    private static Tensor Upload(IBackend backend, float[] values) =>
        backend.FromBytes(MemoryMarshal.AsBytes(values.AsSpan()), DType.F32, [values.Length], DType.F32);

    private static float[] Gradient(Parameter parameter, int index, int step)
    {
        float[] g = TestData.Uniform(parameter.Elements, seed: 900 + 31 * step + 7 * index, scale: 0.05f);
        if (parameter.SpecialGradients)
            for (int i = 0; i < g.Length; i++)
                g[i] = (i % 6) switch { 0 => 0f, 1 => -0f, 2 => g[i] * 1e-38f, 3 => g[i] * 1e5f, _ => g[i] };
        return g;
    }

    private static CheckResult AdamW(IDeviceApi device, double? clipScale)
    {
        using var cuda = new CudaBackend(device, ownsDevice: false);
        using var cpu = new CpuReference();
        using var scope = TensorScope.Begin();
        var onDevice = new List<Tensor[]>();
        var onCpu = new List<Tensor[]>();
        for (int i = 0; i < Parameters.Length; i++)
        {
            var parameter = Parameters[i];
            int n = parameter.Elements;
            float[] p = TestData.Uniform(n, seed: 950 + i, scale: 0.5f);
            float[] m = parameter.Resumed ? TestData.Uniform(n, seed: 960 + i, scale: 0.01f) : new float[n];
            float[] v = parameter.Resumed ? [.. TestData.Uniform(n, seed: 970 + i, scale: 1e-4f).Select(Math.Abs)] : new float[n];
            onDevice.Add([Upload(cuda, p), Upload(cuda, m), Upload(cuda, v)]);
            onCpu.Add([Upload(cpu.Backend, p), Upload(cpu.Backend, m), Upload(cpu.Backend, v)]);
        }
        var report = new StepStatusReport(0, 1, -1, 0, clipScale ?? 1, false);
        using var deviceStatus = clipScale is null ? null : new StepStatus(cuda, report);
        using var cpuStatus = clipScale is null ? null : new StepStatus(cpu.Backend, report);
        var results = new List<CheckResult>();
        for (int k = 0; k < 3; k++)
        {
            var deviceStep = new List<AdamWTensors>();
            var cpuStep = new List<AdamWTensors>();
            var gradients = new List<(Tensor Device, float[] Values)>();
            for (int i = 0; i < Parameters.Length; i++)
            {
                var parameter = Parameters[i];
                var arguments = new AdamWStepArguments(2e-3 * (1.0 - 0.15 * k), i == 3 ? 0.5 : 0.9, i == 3 ? 0.95 : 0.999, i == 3 ? 1e-6 : 1e-8,
                    parameter.WeightDecay, parameter.FirstStep + k);
                float[] g = Gradient(parameter, i, k);
                var dg = Upload(cuda, g);
                gradients.Add((dg, g));
                deviceStep.Add(new(onDevice[i][0], dg, onDevice[i][1], onDevice[i][2], arguments));
                cpuStep.Add(new(onCpu[i][0], Upload(cpu.Backend, g), onCpu[i][1], onCpu[i][2], arguments));
            }
            AdamWOp.Step(deviceStep, deviceStatus);
            AdamWOp.Step(cpuStep, cpuStatus);
            for (int i = 0; i < Parameters.Length; i++)
            {
                string at = $"step {k + 1}, parameter {i} [{Parameters[i].Elements}]: ";
                results.Add(CheckResult.CompareBits(at + "p", onDevice[i][0].ToSingleArray(), onCpu[i][0].ToSingleArray()));
                results.Add(CheckResult.CompareBits(at + "m", onDevice[i][1].ToSingleArray(), onCpu[i][1].ToSingleArray()));
                results.Add(CheckResult.CompareBits(at + "v", onDevice[i][2].ToSingleArray(), onCpu[i][2].ToSingleArray()));
                results.Add(CheckResult.CompareBits(at + "g (read only)", gradients[i].Device.ToSingleArray(), gradients[i].Values));
            }
            if (!CheckResult.Combine([.. results]).Passed) break; // the first step that differs
        }
        return CheckResult.Combine([.. results]);
    }

    private static CheckResult Skipped(IDeviceApi device)
    {
        using var cuda = new CudaBackend(device, ownsDevice: false);
        using var scope = TensorScope.Begin();
        float[] p = TestData.Uniform(2000, seed: 5, scale: 0.5f), m = TestData.Uniform(2000, seed: 6, scale: 0.01f);
        float[] v = [.. TestData.Uniform(2000, seed: 7, scale: 1e-4f).Select(Math.Abs)];
        var (dp, dm, dv) = (Upload(cuda, p), Upload(cuda, m), Upload(cuda, v));
        using var status = new StepStatus(cuda, new StepStatusReport(float.NaN, 1, -1, 0, 1, Skip: true));
        AdamWOp.Step([new AdamWTensors(dp, Upload(cuda, TestData.Uniform(2000, seed: 8)), dm, dv, new AdamWStepArguments(1e-2, 0.9, 0.999, 1e-8, 0.1, 1))], status);
        return CheckResult.Combine(
            CheckResult.CompareBits("p", dp.ToSingleArray(), p),
            CheckResult.CompareBits("m", dm.ToSingleArray(), m),
            CheckResult.CompareBits("v", dv.ToSingleArray(), v));
    }

    private static CheckResult Check(IDeviceApi device, string? special)
    {
        using var cuda = new CudaBackend(device, ownsDevice: false);
        using var cpu = new CpuReference();
        using var scope = TensorScope.Begin();
        (DType DType, int Elements)[] shapes = special is null
            ? [(DType.F32, 1003), (DType.BF16, OptimizerKernels.ChunkElements * 2 + 5), (DType.F32, 0), (DType.F16, 4097), (DType.F32, 1)]
            : [(DType.F32, 100), (DType.F32, 3000), (DType.F32, 20000), (DType.F32, 7), (DType.F32, 50)];
        var deviceTensors = new List<Tensor?>();
        var cpuTensors = new List<Tensor?>();
        for (int i = 0; i < shapes.Length; i++)
        {
            var (dtype, n) = shapes[i];
            if (special is null && i == 2)
            {
                deviceTensors.Add(null); // a parameter without a gradient
                cpuTensors.Add(null);
                continue;
            }
            float[] values = TestData.Uniform(n, seed: 300 + i, scale: 1.5f);
            if (special == "tensor" && i == 2) values[n - 3] = float.NaN;
            if (special == "tensor" && i == 4) values[0] = float.PositiveInfinity;
            deviceTensors.Add(cuda.FromBytes(DeviceBuffer.Encode(dtype, values), dtype, [n], dtype));
            cpuTensors.Add(cpu.F32(CpuReference.RoundTrip(dtype, values), n));
        }
        float[] losses = special == "loss" ? [2.5f, float.NaN] : [2.5f, 1.25f];
        double maxNorm = special is null ? 1.0 : 0;
        using var deviceStatus = new StepStatus(cuda);
        using var cpuStatus = new StepStatus(cpu.Backend);
        GradientCheckOp.Measure(deviceTensors, [.. losses.Select(l => Upload(cuda, [l]))], maxNorm, deviceStatus);
        GradientCheckOp.Measure(cpuTensors, [.. losses.Select(l => Upload(cpu.Backend, [l]))], maxNorm, cpuStatus);
        var (actual, expected) = (deviceStatus.Read(), cpuStatus.Read());
        var tolerance = Tolerances.Forward(DType.F32);
        var exact = actual.FirstNonFinite == expected.FirstNonFinite && actual.Skip == expected.Skip && actual.LossSum.Equals(expected.LossSum)
            ? new CheckResult(0, 0, "index, verdict and losses equal")
            : new CheckResult(double.PositiveInfinity, double.PositiveInfinity, $"device {actual}, CPU {expected}");
        return CheckResult.Combine(
            exact,
            tolerance.Compare("sum of squares", [(float)actual.SumOfSquares], [(float)expected.SumOfSquares]),
            tolerance.Compare("clip scale", [(float)actual.ClipScale], [(float)expected.ClipScale]),
            tolerance.Compare("first non-finite squares", [(float)actual.FirstNonFiniteSquares], [(float)expected.FirstNonFiniteSquares]));
    }

    // Three steps measured into one window of blocks (TrainingOptions.MetricsEvery): step 1 finite, step 2 with a NaN
    // loss, step 3 finite but halted by step 2 (skip = 1, its own sums still measured), as on the CPU.
    private static CheckResult Window(IDeviceApi device)
    {
        using var cuda = new CudaBackend(device, ownsDevice: false);
        using var cpu = new CpuReference();
        using var scope = TensorScope.Begin();
        using var deviceStatus = new StepStatus(cuda, blocks: 3);
        using var cpuStatus = new StepStatus(cpu.Backend, blocks: 3);
        float[][] losses = [[2.5f], [float.NaN], [1.25f]];
        for (int step = 0; step < 3; step++)
        {
            float[] values = TestData.Uniform(3000, seed: 400 + step, scale: 1.5f);
            deviceStatus.Current = cpuStatus.Current = step;
            GradientCheckOp.Measure([Upload(cuda, values)], [Upload(cuda, losses[step])], 1.0, deviceStatus);
            GradientCheckOp.Measure([cpu.F32(values, values.Length)], [Upload(cpu.Backend, losses[step])], 1.0, cpuStatus);
        }
        var (actual, expected) = (deviceStatus.ReadWindow(3), cpuStatus.ReadWindow(3));
        bool[] verdicts = [false, true, true];
        var exact = actual.Select(r => r.Skip).SequenceEqual(verdicts) && expected.Select(r => r.Skip).SequenceEqual(verdicts)
            ? new CheckResult(0, 0, "verdicts: applied, skipped, halted")
            : new CheckResult(double.PositiveInfinity, double.PositiveInfinity, $"device {string.Join(", ", actual)}, CPU {string.Join(", ", expected)}");
        var tolerance = Tolerances.Forward(DType.F32);
        return CheckResult.Combine(exact, tolerance.Compare("sums of squares", [.. actual.Select(r => (float)r.SumOfSquares)], [.. expected.Select(r => (float)r.SumOfSquares)]));
    }
}
