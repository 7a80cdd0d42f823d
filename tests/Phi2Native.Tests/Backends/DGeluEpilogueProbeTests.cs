using NUnit.Framework;
using Phi2Native.Backends.Ops.Activation;
using Phi2Native.Backends.Ops.Mlp;
using Phi2Native.Cuda.Emulator;
using Phi2Native.Tensors;

namespace Phi2Native.Tests.Backends;

/// <summary>
/// The probe CudaBackend.OpenGpu runs to decide whether fc2's dx product may take gelu_new's backward in cuBLASLt's
/// DGELU epilogue: its verdict on the emulated device (which computes (P + C) gelu_new'(aux) by definition), and its
/// judgements against D arrays made by hand in the forms a GPU might compute: the tanh form's derivative times the whole
/// product (passes), the erf form's (fails in fp32), beta C left out of what is multiplied (fails), two bf16 ulps off and
/// NaN (fail).
/// </summary>
[TestFixture]
public class DGeluEpilogueProbeTests
{
    private static (double[] Sums, double[] C, double[] Aux) Inputs(int count)
    {
        var random = new Random(5);
        double[] c = [.. Enumerable.Range(0, count).Select(_ => random.NextDouble() * 2 - 1)];
        double[] sums = [.. c.Select(v => v + random.NextDouble() * 4 - 2)];
        double[] aux = [.. Enumerable.Range(0, count).Select(i => -4 + 8.0 * i / (count - 1))];
        return (sums, c, aux);
    }

    private static float Bf16(double value) => DTypes.BFloat16ToSingle(DTypes.SingleToBFloat16((float)value));

    // sums gelu_new'(aux), by the CPU's gelu_new backward.
    private static double[] TanhForm(double[] sums, double[] aux)
    {
        var result = new double[sums.Length];
        CpuGelu.Backward<double>(sums, aux, result);
        return result;
    }

    [Test, Category("Emulated")]
    public void OnTheEmulatedDeviceDGeluIsGeluNewsDerivativeOfTheWholeProduct()
    {
        using var device = EmulatedDevice.Open();
        var (bf16, fp32) = DGeluEpilogueProbe.Run(device);
        Assert.That(bf16.Passed, Is.True, bf16.ToString());
        Assert.That(fp32.Passed, Is.True, fp32.ToString());
    }

    [Test]
    public void Fp32_TheTanhFormPasses_TheErfFormFails_LeavingCOutFails()
    {
        var (sums, c, aux) = Inputs(1024);
        double[] tanh = TanhForm(sums, aux);
        double[] erf = [.. sums.Select((s, i) => s * DGeluEpilogueProbe.ErfFormDerivative(aux[i]))];
        Assert.That(DGeluEpilogueProbe.JudgeFp32([.. tanh.Select(v => (float)v)], tanh, erf).Passed, Is.True);
        var erfForm = DGeluEpilogueProbe.JudgeFp32([.. erf.Select(v => (float)v)], tanh, erf);
        Assert.That(erfForm.WorstRatio, Is.EqualTo(double.PositiveInfinity), erfForm.ToString());
        double[] withoutCProduct = TanhForm([.. sums.Select((s, i) => s - c[i])], aux);
        float[] withoutC = [.. withoutCProduct.Select((v, i) => (float)v + (float)c[i])];
        Assert.That(DGeluEpilogueProbe.JudgeFp32(withoutC, tanh, erf).Passed, Is.False, "beta C added after the derivative, not multiplied by it");
    }

    [Test]
    public void Bf16_TheReferenceRoundedPasses_TwoUlpsOffFails_NaNFails()
    {
        var (sums, _, aux) = Inputs(2048);
        double[] reference = TanhForm(sums, [.. aux.Select(x => (double)Bf16(x))]);
        float[] rounded = [.. reference.Select(Bf16)];
        Assert.That(DGeluEpilogueProbe.JudgeBf16(rounded, reference).Passed, Is.True, DGeluEpilogueProbe.JudgeBf16(rounded, reference).ToString());
        Assert.That(DGeluEpilogueProbe.JudgeBf16([.. rounded.Select(y => y * (1 + 2f / 128))], reference).Passed, Is.False);
        float[] nan = (float[])rounded.Clone();
        nan[100] = float.NaN;
        Assert.That(DGeluEpilogueProbe.JudgeBf16(nan, reference).Passed, Is.False);
    }
}
