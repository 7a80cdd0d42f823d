using NUnit.Framework;
using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Normalization;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Resources;
using Phi2Native.DeviceChecks;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Cuda;

/// <summary>
/// The kernel resource table (kernels/resources.tsv) and what is computed from it: occupancy by the calculator's rules
/// (figures derived by hand below), ptxas's and cuobjdump's reports parsed, and the shared-memory rule checked for every
/// launcher at Phi-2's shapes against the static sizes ptxas gave, which the emulator cannot know: CI fails where a GPU would.
/// </summary>
[TestFixture]
public class KernelResourceTests
{
    private static string TablePath => Path.Combine(Fixtures.RepositoryRoot, "kernels", "resources.tsv");

    private static IReadOnlyList<KernelResourceRow> Rows => KernelResourceTable.Parse(File.ReadAllText(TablePath)).Rows;

    [Test]
    public void OccupancyFollowsTheCalculatorsRules()
    {
        var sm90 = GpuArchitecture.Sm90;
        // 128 registers: 4096 per warp, 4 warps per scheduler, 16 per SM; blocks of 4 warps: 4 blocks, 25 %.
        Assert.That(Occupancy.Theoretical(sm90, 128, 0, 35 << 10, 128), Is.EqualTo(new Occupancy(4, 16, 0.25, OccupancyLimit.Registers)));
        // 40 registers: 1280 per warp, 12 warps per scheduler, 48 per SM; blocks of 8 warps: 6 blocks, 75 %.
        Assert.That(Occupancy.Theoretical(sm90, 40, 1024, 0, 256), Is.EqualTo(new Occupancy(6, 48, 0.75, OccupancyLimit.Registers)));
        // 33 registers round up to 40 (1056 -> 1280 per warp): the same 6 blocks.
        Assert.That(Occupancy.Theoretical(sm90, 33, 0, 0, 256).BlocksPerSm, Is.EqualTo(6));
        // 100 KiB + 1 KiB reserved per block: 2 blocks fit 228 KiB (on sm_80's 164 KiB, 1).
        Assert.That(Occupancy.Theoretical(sm90, 32, 0, 100 << 10, 128), Is.EqualTo(new Occupancy(2, 8, 0.125, OccupancyLimit.SharedMemory)));
        Assert.That(Occupancy.Theoretical(GpuArchitecture.Sm80, 32, 0, 100 << 10, 128).BlocksPerSm, Is.EqualTo(1));
        // Few registers, one warp: the 32-block limit.
        Assert.That(Occupancy.Theoretical(sm90, 22, 768, 0, 32), Is.EqualTo(new Occupancy(32, 32, 0.5, OccupancyLimit.Blocks)));
        // Small blocks of 256: the thread limit (8 blocks, 64 warps).
        Assert.That(Occupancy.Theoretical(sm90, 16, 0, 0, 256), Is.EqualTo(new Occupancy(8, 64, 1.0, OccupancyLimit.Threads)));
        // Past the opt-in limit a block does not fit at all.
        Assert.That(Occupancy.Theoretical(sm90, 32, 1024, 227 << 10, 128).BlocksPerSm, Is.Zero);
        Assert.That(() => Occupancy.Theoretical(sm90, 32, 0, 0, 1025), Throws.InstanceOf<ArgumentOutOfRangeException>());
    }

    [Test]
    public void StaticAndDynamicSharedMemoryCountTogether()
    {
        Assert.That(SharedMemoryRule.NeedsOptIn(0, 48 << 10), Is.False);
        Assert.That(SharedMemoryRule.NeedsOptIn(4224, 46 << 10), Is.True, "46 KiB dynamic is under 48 KiB alone, not beside a 4 KiB tile");
        Assert.That(() => SharedMemoryRule.Check("transpose_f32", 4224, (227 << 10) - 1024, 227 << 10, "H100"),
            Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contains("transpose_f32").And.Message.Contains("0..228224"));
        Assert.That(() => SharedMemoryRule.Check("transpose_f32", 4224, (227 << 10) - 4224, 227 << 10, "H100"), Throws.Nothing);
    }

    [Test]
    public void PtxasVerboseOutputIsReadPerEntryPoint()
    {
        const string log = """
            ptxas info    : 272 bytes gmem
            ptxas info    : Compiling entry function 'rotary_bf16' for 'sm_90'
            ptxas info    : Function properties for rotary_bf16
            ptxas         .     48 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
            ptxas info    : Used 40 registers, 48 bytes cumulative stack size, 1024 bytes smem
            ptxas info    : Function properties for __internal_accurate_pow
            ptxas         .     8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
            ptxas info    : Compiling entry function 'attention_bf16' for 'sm_90'
            ptxas info    : Function properties for attention_bf16
            ptxas         .     16 bytes stack frame, 12 bytes spill stores, 8 bytes spill loads
            ptxas info    : Used 255 registers
            """;
        Assert.That(PtxasReport.Parse(log), Is.EqualTo(new[]
        {
            new PtxasEntry("rotary_bf16", 40, 0, 0, 48, 1024),
            new PtxasEntry("attention_bf16", 255, 12, 8, 16, 0),
        }));
        Assert.That(() => PtxasReport.Parse("ptxas info    : Compiling entry function 'x' for 'sm_90'\n"),
            Throws.InstanceOf<FormatException>().With.Message.Contains("'x'"));
    }

    [Test]
    public void TensorCoreInstructionsAreCountedPerFunction()
    {
        const string listing = """
            		Function : mma_tile_bf16
                    /*0000*/                   LDC R1, c[0x0][0x28] ;
                    /*0200*/                   LDSM.16.M88.4 R8, [R2] ;
                    /*0210*/                   HMMA.16816.F32.BF16 R4, R8, R12, R4 ;
                    /*0220*/               @!P0 HMMA.16816.F32.BF16 R4, R8, R14, R4 ;
            		Function : add_f32
                    /*0000*/                   FADD R0, R2, R3 ;
                    /*0010*/                   EXIT ;
            """;
        var counts = SassReport.TensorCoreInstructions(listing);
        Assert.That(counts["mma_tile_bf16"], Is.EqualTo(2), "LDSM moves fragments; it is not a tensor-core instruction");
        Assert.That(counts["add_f32"], Is.Zero);
    }

    [Test]
    public void TheCommittedTableReadsBackAsWritten()
    {
        string text = File.ReadAllText(TablePath);
        var (compiler, rows) = KernelResourceTable.Parse(text);
        Assert.That(compiler, Does.StartWith("NVRTC "));
        Assert.That(KernelResourceTable.Format(compiler!, rows), Is.EqualTo(text));
        Assert.That(() => KernelResourceTable.Parse(text.Replace("\tthreads\t", "\tthreadz\t")),
            Throws.InstanceOf<FormatException>().With.Message.Contains("line ").And.Message.Contains("threadz"));
    }

    [Test]
    public void EveryKernelHasARowOnEveryArchitectureAndALaunchAtPhi2Shapes()
    {
        var kernels = KernelSourceCatalog.Embedded.KernelFiles;
        Assert.That(Phi2LaunchShapes.ByKernel.Keys, Is.EquivalentTo(kernels.Keys), "Phi2LaunchShapes must call every kernel's launcher");
        foreach (var architecture in GpuArchitecture.Compiled)
            Assert.That(Rows.Where(r => r.Architecture == architecture.Name).Select(r => (r.Kernel, r.File)),
                Is.EquivalentTo(kernels.Select(k => (k.Key, k.Value))),
                $"kernels/resources.tsv lacks kernels on {architecture.Name}, or names ones that are gone: regenerate it (see its header)");
    }

    [Test]
    public void EveryLaunchAtPhi2ShapesFitsTheSharedMemoryOfEveryArchitecture()
    {
        // The table's launch columns must be the launchers' of today (else the table is stale), and static + dynamic
        // must fit each architecture's opt-in limit; CudaDevice opts in past 48 KiB.
        foreach (var row in Rows)
        {
            var launch = Phi2LaunchShapes.ByKernel[row.Kernel];
            Assert.That((row.BlockThreads, row.DynamicShared), Is.EqualTo(((int)launch.Block.Count, launch.DynamicSharedBytes)),
                $"{row.Kernel}: the launcher's shape changed since kernels/resources.tsv was made; regenerate it");
            var architecture = GpuArchitecture.Named(row.Architecture);
            Assert.That(row.Ptxas.StaticShared + launch.DynamicSharedBytes, Is.LessThanOrEqualTo(architecture.SharedPerBlockOptIn),
                $"{row.Kernel} on {row.Architecture}: {row.Ptxas.StaticShared} static + {launch.DynamicSharedBytes} dynamic bytes of shared memory");
            Assert.That(row.Occupancy.BlocksPerSm, Is.Positive, $"{row.Kernel} on {row.Architecture}: no block fits an SM");
        }
        foreach (var row in Rows.Where(r => r.Kernel.StartsWith("layernorm_backward_", StringComparison.Ordinal)))
            Assert.That(row.Ptxas.StaticShared, Is.LessThanOrEqualTo(LayerNormKernels.StaticSharedAllowance),
                "LayerNormKernels.MaxParameterGradientChannels leaves this much room for the kernel's static shared memory");
    }

    [Test]
    public void NoCommittedKernelSpillsOrSitsBelowItsFloor()
    {
        foreach (var row in Rows)
        {
            Assert.That(row.Spills, Is.False, $"{row.Kernel} spills on {row.Architecture}");
            Assert.That(row.OccupancyPercent, Is.GreaterThanOrEqualTo(row.OccupancyFloor), $"{row.Kernel} on {row.Architecture}");
        }
    }
}
