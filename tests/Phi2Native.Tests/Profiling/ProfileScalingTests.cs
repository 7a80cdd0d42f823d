using NUnit.Framework;
using Phi2Native.Hosting;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Tests.Profiling;

/// <summary>
/// A step modelled at a larger batch, length and depth from a smaller run (what RESULTS' Phi-2 figures are) against the
/// larger run itself, on the emulated device where both fit.
/// </summary>
[TestFixture]
public class ProfileScalingTests
{
    private static ProfileReport Run(ProfileWorkload what, int batch, int seq, int layers, (int, int, int)? at = null, bool graphs = false,
        DType dtype = DType.F32) =>
        ProfileRun.Run(new ProfileOptions
        {
            Device = DeviceChoice.Emulated, What = what, Batch = batch, Sequence = seq, Layers = layers, ModelAt = at, CudaGraphs = graphs, DType = dtype,
        });

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

    [TestCase(DType.F32), TestCase(DType.BF16), Category("Emulated")]
    public void AGraphReplayedTokenModelledDeeperMatchesTheDeeperReplay(DType dtype)
    {
        // A replay runs outside every module scope; the profile attributes its operations to the modules of the graph's
        // eager warm-up, so --model-at can repeat the top layer's. Against a real 4-layer replay: the same operations
        // inside the one graph launch, the same costs, each priced at the graph's launch overhead. bf16 decodes split-K,
        // whose counters the warm-up (the backend's first decode) makes: no operation of their own in its token.
        var modelled = Run(ProfileWorkload.Decode, 1, 12, 2, at: (1, 12, 4), graphs: true, dtype: dtype);
        var real = Run(ProfileWorkload.Decode, 1, 12, 4, graphs: true, dtype: dtype);
        int Inside(ProfileReport r) => r.Events.Count(e => e.InGraph && e.Kind is ProfileEventKind.Kernel or ProfileEventKind.Blas);
        Assert.That(modelled.Launches, Is.EqualTo(1));
        Assert.That(Inside(modelled), Is.EqualTo(Inside(real)), "the operations inside the graph, layer for layer");
        Assert.That(Inside(modelled), Is.GreaterThan(Inside(Run(ProfileWorkload.Decode, 1, 12, 2, graphs: true, dtype: dtype))), "layers were added");
        Assert.That(modelled.Bytes, Is.EqualTo(real.Bytes).Within(3).Percent);
        Assert.That(modelled.ModelH100Ms, Is.EqualTo(real.ModelH100Ms).Within(3).Percent);
    }
}
