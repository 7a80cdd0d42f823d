using NUnit.Framework;
using Phi2Native.Backends.Ops.Mlp;
using Phi2Native.Cuda.Emulator;
using Phi2Native.Tensors;

namespace Phi2Native.Tests.Backends;

/// <summary>
/// The probe CudaBackend.OpenGpu runs to decide whether fc1's gelu_new may run in cuBLASLt's epilogue: its verdict on the
/// emulated device (whose GELU is the tanh form by definition), and its judgements against D arrays made by hand in the
/// forms a GPU might compute: gelu_new (passes), the erf form (fails in fp32), and gelu_new off by two bf16 ulps (fails).
/// </summary>
[TestFixture]
public class GeluEpilogueProbeTests
{
    private static float[] Aux(int count, double range) =>
        [.. Enumerable.Range(0, count).Select(i => (float)(-range + 2 * range * i / (count - 1)))];

    private static double TanhForm(double x) => 0.5 * x * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));

    private static double ErfForm(double x) => 0.5 * x * (1 + GeluEpilogueProbe.Erf(x / Math.Sqrt(2)));

    private static float Bf16(double value) => DTypes.BFloat16ToSingle(DTypes.SingleToBFloat16((float)value));

    [Test, Category("Emulated")]
    public void OnTheEmulatedDeviceTheEpilogueIsGeluNew()
    {
        using var device = EmulatedDevice.Open();
        var verdict = GeluEpilogueProbe.Run(device);
        Assert.That(verdict.IsGeluNew, Is.True, verdict.ToString());
    }

    [Test]
    public void Fp32_TheTanhFormPasses_TheErfFormFails()
    {
        float[] aux = Aux(1024, 5);
        Assert.That(GeluEpilogueProbe.JudgeFp32([.. aux.Select(x => (float)TanhForm(x))], aux).Passed, Is.True);
        var erf = GeluEpilogueProbe.JudgeFp32([.. aux.Select(x => (float)ErfForm(x))], aux);
        Assert.That(erf.Passed, Is.False, erf.ToString());
        Assert.That(erf.WorstRatio, Is.EqualTo(double.PositiveInfinity), "not clearly the tanh form");
    }

    [Test]
    public void Bf16_GeluNewRoundedPasses_TwoUlpsOffFails_NaNFails()
    {
        float[] aux = [.. Aux(2048, 8).Select(x => Bf16(x))];
        float[] rounded = [.. aux.Select(x => Bf16(TanhForm(x)))];
        Assert.That(GeluEpilogueProbe.JudgeBf16(rounded, aux).Passed, Is.True, GeluEpilogueProbe.JudgeBf16(rounded, aux).ToString());
        float[] off = [.. rounded.Select(y => y * (1 + 2f / 128))];
        Assert.That(GeluEpilogueProbe.JudgeBf16(off, aux).Passed, Is.False);
        float[] nan = (float[])rounded.Clone();
        nan[100] = float.NaN;
        Assert.That(GeluEpilogueProbe.JudgeBf16(nan, aux).Passed, Is.False);
    }
}
