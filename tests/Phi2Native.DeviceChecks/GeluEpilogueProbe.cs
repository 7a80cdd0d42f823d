using Phi2Native.Cuda;
using LibraryProbe = Phi2Native.Backends.Ops.Mlp.GeluEpilogueProbe;

namespace Phi2Native.DeviceChecks;

/// <summary>The probe's outcome: whether cuBLASLt's GELU is gelu_new within bf16, and the comparison behind it.</summary>
/// <param name="IsGeluNew">The verdict: true sends LinearGeluOp through the GELU epilogue on this device.</param>
/// <param name="Result">The comparison (always "passed" when the probe could run: a false verdict is an answer, not a failure).</param>
/// <param name="Comparison">The comparison itself, held to bf16's tolerance; its Passed is the verdict.</param>
public sealed record GeluEpilogueVerdict(bool IsGeluNew, CheckResult Result, CheckResult Comparison);

/// <summary>
/// The engine's own probe (the library's GeluEpilogueProbe, which CudaBackend.OpenGpu runs once and whose header says
/// what it compares), reported as checks: the GPU runner records its verdict, and the emulator's checks hold it to
/// "gelu_new" there.
/// </summary>
public static class GeluEpilogueProbe
{
    /// <summary>Runs the probe on <paramref name="device"/> (it does not change the device's flag; <see cref="Apply"/> does).</summary>
    public static GeluEpilogueVerdict Run(IDeviceApi device)
    {
        var verdict = LibraryProbe.Run(device);
        var comparison = CheckResult.Combine(Check("bf16", verdict.Bf16), Check("fp32", verdict.Fp32));
        string said = verdict.IsGeluNew
            ? "verdict: GELU_AUX_BIAS is gelu_new within bf16; LinearGelu takes the epilogue"
            : "verdict: GELU_AUX_BIAS is NOT gelu_new within bf16; LinearGelu keeps the BIAS epilogue + gelu_new";
        return new GeluEpilogueVerdict(verdict.IsGeluNew,
            comparison with { WorstRatio = Math.Min(comparison.WorstRatio, 1.0), Detail = $"{said} ({comparison})" }, comparison);
    }

    /// <summary>Runs the probe and sets <paramref name="device"/>'s flag to its verdict; returns the verdict.</summary>
    public static GeluEpilogueVerdict Apply(IDeviceApi device)
    {
        var verdict = Run(device);
        device.Blas.GeluEpilogueIsGeluNew = verdict.IsGeluNew;
        return verdict;
    }

    /// <summary>The fp32 part alone, as a check: D is the tanh form, not the erf form.</summary>
    internal static CheckResult TanhForm(IDeviceApi device) => Check("D vs tanh-form gelu(aux)", LibraryProbe.Fp32Form(device));

    /// <summary>
    /// The engine's DGELU probe (the library's DGeluEpilogueProbe) as a check: cuBLASLt's DGELU is gelu_new's derivative
    /// times the whole product, beta C included, in bf16 and fp32. A GPU that fails it keeps bias_gelu_new_backward: the
    /// check reports what the engine does there rather than failing the run.
    /// </summary>
    internal static CheckResult DGelu(IDeviceApi device)
    {
        var (bf16, fp32) = Phi2Native.Backends.Ops.Mlp.DGeluEpilogueProbe.Run(device);
        var comparison = CheckResult.Combine(Check("bf16", bf16), Check("fp32", fp32));
        string said = bf16.Passed && fp32.Passed
            ? "verdict: DGELU is gelu_new' of (P + beta C); fc2's dx product takes fc1's gelu backward"
            : "verdict: DGELU is NOT gelu_new' of (P + beta C); fc1 keeps bias_gelu_new_backward";
        return comparison with { WorstRatio = Math.Min(comparison.WorstRatio, 1.0), Detail = $"{said} ({comparison})" };
    }

    private static CheckResult Check(string what, LibraryProbe.Comparison part) => new(part.MaxError, part.WorstRatio, $"{what}: {part.Detail}");
}
