using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.DeviceChecks;

/// <summary>
/// kernels/adamw.cu through <see cref="AdamWKernels"/>, against the CPU backend's AdamWStep: several steps in a row on
/// the same parameter and moments, each with a new gradient and the learning rate of a schedule, weight decay on and
/// off, from fresh (zero) moments at step 1 and from a resumed state at a later step. The kernel does the CPU's fp32
/// operations in the CPU's order from the same fp32 scalars, so parameter and moments must equal the CPU's bit for bit
/// after every step; the gradient must come back untouched.
/// </summary>
public static class AdamWChecks
{
    /// <summary>One run: the hyper-parameters, the first step's number, and whether the moments start from a saved state.</summary>
    private sealed record Setup(string Name, int Elements, int Steps, double LearningRate, double Beta1, double Beta2, double Epsilon,
        double WeightDecay, int FirstStep = 1, bool Resumed = false, bool SpecialGradients = false);

    /// <summary>The checks of this family.</summary>
    public static IReadOnlyList<DeviceCheck> All { get; } =
    [
        Check(new("weight decay 0.01", 1003, 5, 2e-3, 0.9, 0.999, 1e-8, 0.01)),
        Check(new("no weight decay", 1003, 5, 2e-3, 0.9, 0.999, 1e-8, 0)),
        Check(new("one element", 1, 3, 1e-1, 0.9, 0.999, 1e-8, 0.1)),
        Check(new("resumed at step 7, betas 0.5 and 0.95, eps 1e-6, weight decay 0.1", 513, 4, 1e-2, 0.5, 0.95, 1e-6, 0.1,
            FirstStep: 7, Resumed: true)),
        Check(new("zero, subnormal and large gradients", 300, 3, 5e-4, 0.9, 0.999, 1e-8, 0.01, SpecialGradients: true)),
    ];

    private static DeviceCheck Check(Setup setup) =>
        new($"adamw_f32 [{setup.Elements}] {setup.Steps} steps, {setup.Name}", ["adamw_f32"], device => Run(device, setup));

    // The gradient of step k: seeded per step, so each step sees a new one, as training does.
    private static float[] Gradient(Setup setup, int k)
    {
        float[] g = TestData.Uniform(setup.Elements, seed: 900 + 31 * k + setup.Elements, scale: 0.05f);
        if (setup.SpecialGradients)
        {
            for (int i = 0; i < g.Length; i++)
            {
                g[i] = (i % 6) switch
                {
                    0 => 0f,
                    1 => -0f,
                    2 => g[i] * 1e-38f, // subnormal: its square underflows to 0, its first-moment term does not
                    3 => g[i] * 1e5f,
                    _ => g[i],
                };
            }
        }
        return g;
    }

    private static CheckResult Run(IDeviceApi device, Setup setup)
    {
        int n = setup.Elements;
        float[] p0 = TestData.Uniform(n, seed: 950 + n, scale: 0.5f);
        float[] m0 = setup.Resumed ? TestData.Uniform(n, seed: 960 + n, scale: 0.01f) : new float[n];
        float[] v0 = setup.Resumed ? [.. TestData.Uniform(n, seed: 970 + n, scale: 1e-4f).Select(Math.Abs)] : new float[n];

        using var p = DeviceBuffer.Upload(device, DType.F32, p0);
        using var m = DeviceBuffer.Upload(device, DType.F32, m0);
        using var v = DeviceBuffer.Upload(device, DType.F32, v0);
        using var cpu = new CpuReference();
        using var cp = cpu.F32(p0, n);
        using var cm = cpu.F32(m0, n);
        using var cv = cpu.F32(v0, n);

        CheckResult? last = null;
        for (int k = 0; k < setup.Steps; k++)
        {
            // A schedule: the learning rate changes from step to step.
            var arguments = new AdamWStepArguments(setup.LearningRate * (1.0 - 0.15 * k), setup.Beta1, setup.Beta2, setup.Epsilon,
                setup.WeightDecay, setup.FirstStep + k);
            float[] gradient = Gradient(setup, k);
            using var g = DeviceBuffer.Upload(device, DType.F32, gradient);
            AdamWKernels.AdamWStep(device, DType.F32, p.Pointer, g.Pointer, m.Pointer, v.Pointer, n, arguments);
            using var cg = cpu.F32(gradient, n);
            cpu.Backend.AdamWStep(cp, cg, cm, cv, arguments);

            string step = $"step {arguments.Step}: ";
            last = CheckResult.Combine(
                CheckResult.CompareBits(step + "p", p.Download(), cp.ToSingleArray()),
                CheckResult.CompareBits(step + "m", m.Download(), cm.ToSingleArray()),
                CheckResult.CompareBits(step + "v", v.Download(), cv.ToSingleArray()),
                CheckResult.CompareBits(step + "g (read only)", g.Download(), gradient));
            if (!last.Passed) return last; // the first step that differs
        }
        return last!;
    }
}
