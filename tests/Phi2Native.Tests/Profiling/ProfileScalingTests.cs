using NUnit.Framework;
using Phi2Native.Hosting;
using Phi2Native.Profiling;

namespace Phi2Native.Tests.Profiling;

/// <summary>
/// A step modelled at a larger batch, length and depth from a smaller run (what RESULTS' Phi-2 figures are) against the
/// larger run itself, on the emulated device where both fit.
/// </summary>
[TestFixture]
public class ProfileScalingTests
{
    private static ProfileReport Run(ProfileWorkload what, int batch, int seq, int layers, (int, int, int)? at = null) =>
        ProfileRun.Run(new ProfileOptions { Device = DeviceChoice.Emulated, What = what, Batch = batch, Sequence = seq, Layers = layers, ModelAt = at });

    [TestCase(ProfileWorkload.Lora)]
    [TestCase(ProfileWorkload.Decode)]
    [TestCase(ProfileWorkload.Prefill)]
    [Category("Emulated")]
    public void ModelledFromASmallerRunMatchesTheLargerRun(ProfileWorkload what)
    {
        var modelled = Run(what, 1, 12, 2, at: (2, 24, 4));
        var real = Run(what, 2, 24, 4);
        Assert.That(modelled.Launches, Is.EqualTo(real.Launches), "the same launches, layer for layer");
        Assert.That(modelled.HostSyncs, Is.EqualTo(real.HostSyncs));
        // Costs: exact for GEMMs and the row kernels; the parameter-sized parts of LayerNorm's backward and the rotary
        // tables scale with the rows too, so a few percent at these tiny widths (less at Phi-2's).
        Assert.That(modelled.Bytes, Is.EqualTo(real.Bytes).Within(3).Percent);
        Assert.That(modelled.Flops, Is.EqualTo(real.Flops).Within(3).Percent);
        Assert.That(modelled.ModelH100Ms, Is.EqualTo(real.ModelH100Ms).Within(3).Percent);
        Assert.That(modelled.ModelH100Mfu, Is.EqualTo(real.ModelH100Mfu).Within(3).Percent);
    }
}
