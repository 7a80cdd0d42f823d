using System.Runtime.InteropServices;
using NUnit.Framework;
using Phi2Native.Cuda.Emulator;

namespace Phi2Native.Tests.Cuda;

/// <summary>
/// The emulated cp.async wrappers of kernels/common.cuh (cp_async_ca_16, cp_async_cg_16, cp_async_cg_16_or_zero,
/// cp_async_commit_group, cp_async_wait_group), through the emulator-only kernels of kernels/emu/test_async.cu: the
/// PTX ISA's group semantics chunk by chunk (wait_group 1 completes every committed group but the newest, wait_group
/// 0 all of them, a src-size of 0 writes zeros), and the poison that makes a missing wait or barrier visible (0xFFFF,
/// NaN in bf16 and f16, where the data should be), and a misaligned address failing the launch.
/// </summary>
[TestFixture, Category("Emulated")]
public unsafe class CpAsyncEmulationTests
{
    private const int Chunks = 64, Elements = Chunks * 8;
    private const ushort Poison = 0xFFFF;

    /// <summary>A 16-byte aligned copy of <paramref name="values"/> in native memory (a managed array may be 8-aligned).</summary>
    private sealed class Aligned : IDisposable
    {
        public ushort* Pointer { get; }
        public int Length { get; }

        public Aligned(ReadOnlySpan<ushort> values)
        {
            Length = values.Length;
            Pointer = (ushort*)NativeMemory.AlignedAlloc((nuint)(values.Length * sizeof(ushort)), 16);
            values.CopyTo(new Span<ushort>(Pointer, Length));
        }

        public ushort[] ToArray() => new ReadOnlySpan<ushort>(Pointer, Length).ToArray();

        public void Dispose() => NativeMemory.AlignedFree(Pointer);
    }

    /// <summary>Distinct values, none of them the poison: element i holds i + 1.</summary>
    private static ushort[] Source(int count) => Enumerable.Range(1, count).Select(i => (ushort)i).ToArray();

    private static ushort[] Filled(int count) => Enumerable.Repeat((ushort)0x1234, count).ToArray();

    private static void Launch(string kernel, params nint[] args) =>
        EmulatorLibrary.Default.LaunchChecked(kernel, (1, 1, 1), (32, 1, 1), 0, args);

    [TestCase(Chunks)]
    [TestCase(40)]
    [TestCase(32)]
    public void WaitGroupCompletesEveryCommittedGroupButTheNewestPending(int readable)
    {
        ushort[] source = Source(Elements);
        using var src = new Aligned(source);
        using var afterFirst = new Aligned(Filled(Elements));
        using var afterAll = new Aligned(Filled(Elements));
        ushort* argSrc = src.Pointer, argFirst = afterFirst.Pointer, argAll = afterAll.Pointer;
        int argReadable = readable;
        Launch("emu_test_cp_async_groups", (nint)(&argSrc), (nint)(&argFirst), (nint)(&argAll), (nint)(&argReadable));

        ushort[] first = afterFirst.ToArray(), all = afterAll.ToArray();
        for (int chunk = 0; chunk < Chunks; chunk++)
            for (int e = 0; e < 8; e++)
            {
                int i = chunk * 8 + e;
                bool groupZero = chunk < 32;
                ushort landed = groupZero || chunk < readable ? source[i] : (ushort)0;
                // Group 0 has landed after wait_group<1>; group 1 is still in flight, its destination poisoned.
                Assert.That(first[i], Is.EqualTo(groupZero ? landed : Poison), $"after wait_group<1>, chunk {chunk} element {e}");
                Assert.That(all[i], Is.EqualTo(landed), $"after wait_group<0>, chunk {chunk} element {e}");
            }
    }

    [Test]
    public void AMissingWaitReadsPoisonNotTheData()
    {
        using var src = new Aligned(Source(32 * 8));
        using var output = new Aligned(Filled(32 * 8));
        ushort* argSrc = src.Pointer, argOut = output.Pointer;
        Launch("emu_test_cp_async_missing_wait", (nint)(&argSrc), (nint)(&argOut));
        Assert.That(output.ToArray(), Is.All.EqualTo(Poison), "a copy committed but never waited for has not landed");
    }

    [Test]
    public void AMissingBarrierAfterTheWaitReadsPoison()
    {
        ushort[] source = Source(32 * 8);
        using var src = new Aligned(source);
        using var output = new Aligned(Filled(32 * 8));
        ushort* argSrc = src.Pointer, argOut = output.Pointer;
        Launch("emu_test_cp_async_missing_barrier", (nint)(&argSrc), (nint)(&argOut));
        ushort[] read = output.ToArray();
        // Lanes run in order up to a barrier: lanes 0..30 read a neighbour's chunk before that neighbour even issued its
        // copy (the block's poisoned shared memory); lane 31 reads chunk 0, which lane 0 completed, so only it sees data.
        for (int lane = 0; lane < 32; lane++)
            for (int e = 0; e < 8; e++)
                Assert.That(read[lane * 8 + e], Is.EqualTo(lane < 31 ? Poison : source[e]), $"lane {lane} element {e}");
    }

    [Test]
    public void AMisalignedSourceFailsTheLaunch()
    {
        using var src = new Aligned(Source(32 * 8 + 8));
        using var output = new Aligned(Filled(32));
        ushort* argSrc = src.Pointer, argOut = output.Pointer;
        nint[] args = [(nint)(&argSrc), (nint)(&argOut)];
        var e = Assert.Throws<InvalidOperationException>(() => Launch("emu_test_cp_async_misaligned", args));
        Assert.That(e!.Message, Does.Contain("emu_test_cp_async_misaligned").And.Contain("cp_async_cg_16: the addresses")
            .And.Contain("must both be 16-byte aligned"));
    }
}
