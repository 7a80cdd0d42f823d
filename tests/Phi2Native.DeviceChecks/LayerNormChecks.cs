using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Normalization;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.DeviceChecks;

/// <summary>
/// kernels/layernorm.cu through <see cref="LayerNormKernels"/>, against the CPU backend's LayerNorm and
/// LayerNormBackward on the same widened inputs: y, the saved mean and rstd, dX, and dGamma/dBeta accumulated into
/// buffers that already hold a gradient (as a second micro-batch would find them), or left out (null) as for a
/// frozen LayerNorm; dX written, or added to a gradient dX already holds (the residual stream's, as in a decoder layer).
/// Backward runs on the statistics the device's own forward saved, as training does.
/// </summary>
public static class LayerNormChecks
{
    private const float Eps = 1e-5f;

    /// <summary>Which gradients a backward check asks for.</summary>
    [Flags]
    private enum Wanted { DX = 1, DGamma = 2, DBeta = 4, All = DX | DGamma | DBeta, AddToDX = 8 }

    private static readonly (Wanted Flag, string Name)[] Names = [(Wanted.DX, "dX"), (Wanted.DGamma, "dGamma"), (Wanted.DBeta, "dBeta")];

    /// <summary>The checks of this family.</summary>
    public static IReadOnlyList<DeviceCheck> All { get; } =
    [
        Forward(DType.F32, 4, 80),
        Forward(DType.F32, 3, 2561, offset: 3f),
        Forward(DType.F32, 2, 7),
        Forward(DType.BF16, 4, 80),
        Forward(DType.BF16, 3, 2561, offset: 3f),
        Backward(DType.F32, 4, 80, Wanted.All),
        Backward(DType.F32, 3, 2561, Wanted.All),
        Backward(DType.F32, 5, 80, Wanted.All, maxBlocks: 2),
        Backward(DType.F32, 2, 7, Wanted.All),
        Backward(DType.F32, 3, 80, Wanted.DX),
        Backward(DType.F32, 3, 80, Wanted.DGamma | Wanted.DBeta),
        Backward(DType.F32, 3, 80, Wanted.DX | Wanted.DBeta),
        Backward(DType.BF16, 4, 80, Wanted.All),
        Backward(DType.BF16, 3, 2561, Wanted.All),
        Backward(DType.BF16, 5, 80, Wanted.DGamma, maxBlocks: 3),
        Backward(DType.F32, 4, 80, Wanted.All | Wanted.AddToDX),
        Backward(DType.F32, 3, 2561, Wanted.DX | Wanted.AddToDX),
        Backward(DType.BF16, 4, 80, Wanted.All | Wanted.AddToDX, maxBlocks: 3),
        Backward(DType.BF16, 3, 2561, Wanted.DX | Wanted.AddToDX),
    ];

    private static string Suffix(DType dtype) => KernelName.Suffix(dtype);

    private static DeviceCheck Forward(DType dtype, int rows, int channels, float offset = 0f) =>
        new($"layernorm_{Suffix(dtype)} [{rows}, {channels}]{(offset != 0 ? $" mean {offset}" : "")}", [$"layernorm_{Suffix(dtype)}"],
            device => RunForward(device, dtype, rows, channels, offset));

    private static DeviceCheck Backward(DType dtype, int rows, int channels, Wanted wanted, int maxBlocks = LayerNormKernels.ParameterGradientBlocks)
    {
        var gradients = wanted & Wanted.All;
        string what = gradients == Wanted.All ? "all gradients" : string.Join(" and ", Names.Where(n => wanted.HasFlag(n.Flag)).Select(n => n.Name)) + " only, others null";
        string grid = maxBlocks < rows ? $", {maxBlocks} blocks" : "";
        string added = wanted.HasFlag(Wanted.AddToDX) ? ", dX added (+=)" : "";
        return new($"layernorm_backward_{Suffix(dtype)} [{rows}, {channels}] {what}{grid}{added}", [$"layernorm_{Suffix(dtype)}", $"layernorm_backward_{Suffix(dtype)}"],
            device => RunBackward(device, dtype, rows, channels, wanted, maxBlocks));
    }

    private sealed record Inputs(float[] X, float[] Gamma, float[] Beta);

    // Rows with a mean away from zero, gamma around 1 and beta around 0, as a trained LayerNorm has; seeded by shape.
    private static Inputs MakeInputs(int rows, int channels, float offset)
    {
        float[] x = [.. TestData.Uniform(rows * channels, seed: 100 + channels, scale: 1.5f).Select((v, i) => v + offset + 0.1f * (i / channels))];
        float[] gamma = [.. TestData.Uniform(channels, seed: 200 + channels, scale: 0.2f).Select(v => 1f + v)];
        float[] beta = TestData.Uniform(channels, seed: 300 + channels, scale: 0.1f);
        return new(x, gamma, beta);
    }

    private static CheckResult RunForward(IDeviceApi device, DType dtype, int rows, int channels, float offset)
    {
        var inputs = MakeInputs(rows, channels, offset);
        using var x = DeviceBuffer.Upload(device, dtype, inputs.X);
        using var gamma = DeviceBuffer.Upload(device, dtype, inputs.Gamma);
        using var beta = DeviceBuffer.Upload(device, dtype, inputs.Beta);
        using var y = DeviceBuffer.Allocate(device, dtype, rows * channels);
        using var mean = DeviceBuffer.Allocate(device, DType.F32, rows);
        using var rstd = DeviceBuffer.Allocate(device, DType.F32, rows);
        LayerNormKernels.LayerNorm(device, dtype, x.Pointer, gamma.Pointer, beta.Pointer, Eps, y.Pointer, mean.Pointer, rstd.Pointer, rows, channels);

        using var cpu = new CpuReference();
        using var cx = cpu.Stored(dtype, inputs.X, rows, channels);
        using var cg = cpu.Stored(dtype, inputs.Gamma, channels);
        using var cb = cpu.Stored(dtype, inputs.Beta, channels);
        using var cy = LayerNormOp.Forward(cx, cg, cb, Eps, out var cmean, out var crstd);
        using (cmean)
        using (crstd)
        {
            return CheckResult.Combine(
                Tolerances.Forward(dtype).Compare("y", y.Download(), cy.ToSingleArray()),
                Tolerances.Forward(DType.F32).Compare("mean", mean.Download(), cmean.ToSingleArray()),
                Tolerances.Forward(DType.F32).Compare("rstd", rstd.Download(), crstd.ToSingleArray()));
        }
    }

    private static CheckResult RunBackward(IDeviceApi device, DType dtype, int rows, int channels, Wanted wanted, int maxBlocks)
    {
        var inputs = MakeInputs(rows, channels, 0.5f);
        float[] dy = TestData.Uniform(rows * channels, seed: 400 + channels);
        // What earlier micro-batches left in the parameter gradients: the kernel must add to it, not overwrite it.
        float[] priorGamma = TestData.Uniform(channels, seed: 500 + channels, scale: 3f);
        float[] priorBeta = TestData.Uniform(channels, seed: 600 + channels, scale: 3f);
        // The residual stream's gradient, already pending for x when the LayerNorm's is added to it.
        float[] priorDx = TestData.Uniform(rows * channels, seed: 700 + channels, scale: 2f);
        bool wantDx = wanted.HasFlag(Wanted.DX), wantDGamma = wanted.HasFlag(Wanted.DGamma), wantDBeta = wanted.HasFlag(Wanted.DBeta);
        bool addToDx = wanted.HasFlag(Wanted.AddToDX);

        using var x = DeviceBuffer.Upload(device, dtype, inputs.X);
        using var gamma = DeviceBuffer.Upload(device, dtype, inputs.Gamma);
        using var beta = DeviceBuffer.Upload(device, dtype, inputs.Beta);
        using var y = DeviceBuffer.Allocate(device, dtype, rows * channels);
        using var mean = DeviceBuffer.Allocate(device, DType.F32, rows);
        using var rstd = DeviceBuffer.Allocate(device, DType.F32, rows);
        using var dY = DeviceBuffer.Upload(device, dtype, dy);
        using var dX = !wantDx ? null : addToDx ? DeviceBuffer.Upload(device, dtype, priorDx) : DeviceBuffer.Allocate(device, dtype, rows * channels);
        using var dGamma = wantDGamma ? DeviceBuffer.Upload(device, DType.F32, priorGamma) : null;
        using var dBeta = wantDBeta ? DeviceBuffer.Upload(device, DType.F32, priorBeta) : null;
        LayerNormKernels.LayerNorm(device, dtype, x.Pointer, gamma.Pointer, beta.Pointer, Eps, y.Pointer, mean.Pointer, rstd.Pointer, rows, channels);
        LayerNormKernels.LayerNormBackward(device, dtype, dY.Pointer, x.Pointer, gamma.Pointer, mean.Pointer, rstd.Pointer,
            dX?.Pointer ?? DevicePtr.Null, dGamma?.Pointer ?? DevicePtr.Null, dBeta?.Pointer ?? DevicePtr.Null, rows, channels, maxBlocks: maxBlocks,
            accumulateDx: addToDx);

        using var cpu = new CpuReference();
        using var cx = cpu.Stored(dtype, inputs.X, rows, channels);
        using var cg = cpu.Stored(dtype, inputs.Gamma, channels);
        using var cb = cpu.Stored(dtype, inputs.Beta, channels);
        using var cdy = cpu.Stored(dtype, dy, rows, channels);
        using var cy = LayerNormOp.Forward(cx, cg, cb, Eps, out var cmean, out var crstd);
        using var cdx = !wantDx ? null : addToDx ? cpu.Stored(dtype, priorDx, rows, channels) : cpu.Backend.Empty([rows, channels], DType.F32);
        using var cdg = wantDGamma ? cpu.F32(priorGamma, channels) : null;
        using var cdb = wantDBeta ? cpu.F32(priorBeta, channels) : null;
        using (cmean)
        using (crstd)
        {
            LayerNormOp.Backward(cdy, cx, cg, cmean, crstd, cdx, cdg, cdb, accumulateDx: addToDx);
            var parts = new List<CheckResult> { Tolerances.Forward(dtype).Compare("y", y.Download(), cy.ToSingleArray()) };
            if (wantDx) parts.Add(Tolerances.Gradient(dtype).Compare("dX", dX!.Download(), cdx!.ToSingleArray()));
            // fp32 sums over the rows of fp32 terms, whatever the dtype of their factors.
            if (wantDGamma) parts.Add(Tolerances.Gradient(DType.F32).Compare("dGamma", dGamma!.Download(), cdg!.ToSingleArray()));
            if (wantDBeta) parts.Add(Tolerances.Gradient(DType.F32).Compare("dBeta", dBeta!.Download(), cdb!.ToSingleArray()));
            return CheckResult.Combine([.. parts]);
        }
    }
}
