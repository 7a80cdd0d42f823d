using System.Text.RegularExpressions;
using NUnit.Framework;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Emulator;
using Phi2Native.Cuda.Native;
using Phi2Native.Tensors;

namespace Phi2Native.Tests.Cuda;

/// <summary>
/// The kernel emulator (kernels/emu) loaded through the assembly's resolver: launches travel exactly as
/// cuLaunchKernel's kernelParams (an array of pointers to each parameter's value), and planted bugs - a
/// missing __syncthreads, a thread that skips a barrier, a __trap, a shuffle over a missing lane - fail
/// instead of passing.
/// </summary>
[TestFixture, Category("Emulated")]
public unsafe class EmulatorTests
{
    [Test]
    public void TheEmulatorLoadsFromBesideTheAssemblyThroughTheResolver()
    {
        var outcome = NativeLibraryResolver.Load(NativeLibraryResolver.Emulator);
        Assert.That(outcome.Failure, Is.Null);
        Assert.That(outcome.LoadedFrom, Does.EndWith("/" + NativeLibraryResolver.EmulatorFileName));
    }

    [Test]
    public void TheEmulatorIsLookedForBesideTheAssemblyThenInThePackagesRuntimesFolderThenInTheHostsNativeFolders()
    {
        // A host built against the package without a runtime identifier has it in bin/runtimes/linux-x64/native; the
        // runtime's NATIVE_DLL_SEARCH_DIRECTORIES names that folder (and the app's, given again: said once).
        var candidates = NativeLibraryResolver.EmulatorCandidates("/app", "/app/:/app/runtimes/linux-x64/native/::/usr/share/dotnet/shared/Microsoft.NETCore.App/10.0.0/");
        Assert.That(candidates, Is.EqualTo(new[]
        {
            "/app/libphi2emu.so",
            "/app/runtimes/linux-x64/native/libphi2emu.so",
            "/usr/share/dotnet/shared/Microsoft.NETCore.App/10.0.0/libphi2emu.so",
        }));
        Assert.That(NativeLibraryResolver.EmulatorCandidates("/app", null), Has.Count.EqualTo(2));
    }

    [Test]
    public void AddF32OverAnOddSizeWithAPartialLastBlock()
    {
        const int n = 1000;
        float[] a = Enumerable.Range(0, n).Select(i => i * 0.5f).ToArray();
        float[] b = Enumerable.Range(0, n).Select(i => 3f - i).ToArray();
        // One element past the end stays untouched: the bounds check in the kernel matters.
        float[] y = Enumerable.Repeat(float.NaN, n + 1).ToArray();
        y[n] = 42f;
        fixed (float* pa = a, pb = b, py = y)
        {
            float* argA = pa, argB = pb, argY = py;
            int argN = n;
            nint[] args = [(nint)(&argA), (nint)(&argB), (nint)(&argY), (nint)(&argN)];
            EmulatorLibrary.Default.LaunchChecked("add_f32", ((n + 255) / 256, 1, 1), (256, 1, 1), 0, args);
        }
        for (int i = 0; i < n; i++) Assert.That(y[i], Is.EqualTo(a[i] + b[i]), $"element {i}");
        Assert.That(y[n], Is.EqualTo(42f));
    }

    [Test]
    public void ScaleF32InPlace()
    {
        const int n = 77;
        float[] x = Enumerable.Range(0, n).Select(i => (float)i).ToArray();
        fixed (float* px = x)
        {
            float* argX = px, argY = px;
            float alpha = -2.5f;
            int argN = n;
            nint[] args = [(nint)(&argX), (nint)(&argY), (nint)(&alpha), (nint)(&argN)];
            EmulatorLibrary.Default.LaunchChecked("scale_f32", (1, 1, 1), (128, 1, 1), 0, args);
        }
        for (int i = 0; i < n; i++) Assert.That(x[i], Is.EqualTo(-2.5f * i), $"element {i}");
    }

    private static float[] Rotate(string kernel, int threads)
    {
        float[] x = Enumerable.Range(1, threads).Select(i => (float)i).ToArray();
        float[] y = new float[threads];
        fixed (float* px = x, py = y)
        {
            float* argX = px, argY = py;
            nint[] args = [(nint)(&argX), (nint)(&argY)];
            EmulatorLibrary.Default.LaunchChecked(kernel, (1, 1, 1), ((uint)threads, 1, 1), 0, args);
        }
        return y;
    }

    [Test]
    public void SharedMemoryWithTheBarrierRotates()
    {
        float[] y = Rotate("emu_test_rotate_synced", 64);
        Assert.That(y, Is.EqualTo(Enumerable.Range(0, 64).Select(t => (float)((t + 1) % 64 + 1)).ToArray()));
    }

    [Test]
    public void AMissingSyncthreadsReadsPoisonedSharedMemory()
    {
        // Without the barrier a thread reads its neighbour's slot before the neighbour has written it;
        // fresh shared memory is NaN, so the bug shows instead of reading a plausible stale value.
        float[] y = Rotate("emu_test_rotate_unsynced", 64);
        Assert.That(y.Count(float.IsNaN), Is.GreaterThan(0), "a missing __syncthreads must not give the right answer");
        Assert.That(y.Take(63).All(float.IsNaN), Is.True);
    }

    [Test]
    public void AThreadReturningBeforeABarrierFailsTheLaunchNamingTheKernel()
    {
        var e = Assert.Throws<InvalidOperationException>(() => Rotate("emu_test_early_return", 64));
        Assert.That(e!.Message, Does.Contain("emu_test_early_return").And.Contain("deadlock").And.Contain("1 exited"));
    }

    [Test]
    public void TrapFailsTheLaunchNamingKernelBlockAndThread()
    {
        var e = Assert.Throws<InvalidOperationException>(() =>
            EmulatorLibrary.Default.LaunchChecked("emu_test_trap", (2, 1, 1), (4, 1, 1), 0, []));
        Assert.That(e!.Message, Does.Contain("kernel emu_test_trap, block (0,0,0), thread (0,0,0)").And.Contain("__trap"));
    }

    [Test]
    public void WarpSumExchangesWithinEachWarpOnly()
    {
        float[] x = Enumerable.Range(1, 64).Select(i => (float)i).ToArray();
        float[] y = new float[64];
        fixed (float* px = x, py = y)
        {
            float* argX = px, argY = py;
            nint[] args = [(nint)(&argX), (nint)(&argY)];
            EmulatorLibrary.Default.LaunchChecked("emu_test_warp_sum", (1, 1, 1), (64, 1, 1), 0, args);
        }
        Assert.That(y.Take(32), Is.All.EqualTo(528f));  // 1 + ... + 32
        Assert.That(y.Skip(32), Is.All.EqualTo(1552f)); // 33 + ... + 64
    }

    [Test]
    public void AFullMaskShuffleInAPartialWarpFails()
    {
        // 48 threads: warp 1 has 16 lanes, so a 0xffffffff mask names lanes that do not exist.
        float[] x = new float[48], y = new float[48];
        fixed (float* px = x, py = y)
        {
            float* argX = px, argY = py;
            nint[] args = [(nint)(&argX), (nint)(&argY)];
            var e = Assert.Throws<InvalidOperationException>(() =>
                EmulatorLibrary.Default.LaunchChecked("emu_test_warp_sum", (1, 1, 1), (48, 1, 1), 0, args));
            Assert.That(e!.Message, Does.Contain("emu_test_warp_sum").And.Contain("lane 16 of warp 1"));
        }
    }

    [Test]
    public void AShuffleFromALaneOutsideTheMaskFails()
    {
        float[] x = new float[32], y = new float[32];
        fixed (float* px = x, py = y)
        {
            float* argX = px, argY = py;
            nint[] args = [(nint)(&argX), (nint)(&argY)];
            var e = Assert.Throws<InvalidOperationException>(() =>
                EmulatorLibrary.Default.LaunchChecked("emu_test_shfl_outside_mask", (1, 1, 1), (32, 1, 1), 0, args));
            Assert.That(e!.Message, Does.Contain("emu_test_shfl_outside_mask").And.Contain("source lane 16 is not in the mask"));
        }
    }

    [TestCase(256, 1000)]
    [TestCase(64, 5)]
    public void ABlockSumThroughWarpShufflesAndDynamicSharedMemory(int threads, int n)
    {
        float[] x = Enumerable.Range(0, n).Select(i => (float)(i % 7) - 2f).ToArray();
        float[] y = [float.NaN];
        fixed (float* px = x, py = y)
        {
            float* argX = px, argY = py;
            int argN = n;
            nint[] args = [(nint)(&argX), (nint)(&argY), (nint)(&argN)];
            EmulatorLibrary.Default.LaunchChecked("emu_test_block_sum", (1, 1, 1), ((uint)threads, 1, 1), threads / 32 * sizeof(float), args);
        }
        Assert.That(y[0], Is.EqualTo(x.Sum()));
    }

    [Test]
    public void Bf16AndF16ConversionsMatchDotNetBitForBit()
    {
        var random = new Random(5);
        var values = new List<float> { 0f, -0f, 1f, -1f, 65504f, 65519.99f, 65520f, 1e6f, -1e6f, 6.1035156e-5f, 6.0975552e-5f,
            5.9604645e-8f, 2.9802322e-8f, 2.9802326e-8f, 1e-10f, float.Epsilon, float.MaxValue, float.PositiveInfinity,
            float.NegativeInfinity, float.NaN, 1.00390625f, 1.01171875f, 3.14159265f };
        // Exact midpoints between fp16 neighbours, to pin round-half-to-even, and random bit patterns.
        for (int i = 0; i < 2000; i++) values.Add((float)BitConverter.UInt16BitsToHalf((ushort)random.Next(0x7c00)) + (float)Math.ScaleB(1, -25));
        for (int i = 0; i < 20000; i++) values.Add(BitConverter.Int32BitsToSingle(random.Next() ^ (random.Next(2) << 31)));
        for (int i = 0; i < 5000; i++) values.Add((float)(random.NextDouble() - 0.5) * MathF.Pow(2, random.Next(-30, 20)));
        float[] x = values.ToArray();
        int n = x.Length;
        ushort[] bf = new ushort[n], h = new ushort[n];
        float[] bfBack = new float[n], hBack = new float[n];
        fixed (float* px = x, pbfb = bfBack, phb = hBack)
        fixed (ushort* pbf = bf, ph = h)
        {
            float* a0 = px, a3 = pbfb, a4 = phb;
            ushort* a1 = pbf, a2 = ph;
            int a5 = n;
            nint[] args = [(nint)(&a0), (nint)(&a1), (nint)(&a2), (nint)(&a3), (nint)(&a4), (nint)(&a5)];
            EmulatorLibrary.Default.LaunchChecked("emu_test_convert", ((uint)(n + 255) / 256, 1, 1), (256, 1, 1), 0, args);
        }
        for (int i = 0; i < n; i++)
        {
            Half expected = (Half)x[i];
            if (float.IsNaN(x[i]))
            {
                Assert.That(float.IsNaN(bfBack[i]) && float.IsNaN(hBack[i]), Is.True, $"NaN stays NaN ({x[i]})");
                continue;
            }
            Assert.That(bf[i], Is.EqualTo(DTypes.SingleToBFloat16(x[i])), $"bf16 of {x[i]:R}");
            Assert.That(h[i], Is.EqualTo(BitConverter.HalfToUInt16Bits(expected)), $"f16 of {x[i]:R}");
            Assert.That(bfBack[i], Is.EqualTo(DTypes.BFloat16ToSingle(bf[i])), $"bf16 back of {x[i]:R}");
            Assert.That(BitConverter.SingleToInt32Bits(hBack[i]), Is.EqualTo(BitConverter.SingleToInt32Bits((float)expected)), $"f16 back of {x[i]:R}");
        }
    }

    [Test]
    public void UnknownKernelsAndInvalidShapesFail()
    {
        Assert.That(() => EmulatorLibrary.Default.LaunchChecked("no_such_kernel", (1, 1, 1), (1, 1, 1), 0, []),
            Throws.InvalidOperationException.With.Message.Contains("no_such_kernel"));
        Assert.That(() => EmulatorLibrary.Default.LaunchChecked("emu_test_trap", (1, 1, 1), (1025, 1, 1), 0, []),
            Throws.InvalidOperationException.With.Message.Contains("invalid launch configuration"));
    }

    [Test]
    public void EveryKernelInTheSourcesHasATableRow()
    {
        string kernels = Path.Combine(RepoRoot(), "kernels");
        var declared = Directory.EnumerateFiles(kernels, "*.cu").Concat(Directory.EnumerateFiles(Path.Combine(kernels, "emu"), "*.cu"))
            .SelectMany(f => Regex.Matches(File.ReadAllText(f), @"PHI2_KERNEL\s+void\s+(\w+)\s*\(").Select(m => m.Groups[1].Value))
            .Order().ToList();
        Assert.That(declared, Does.Contain("add_f32"));
        Assert.That(EmulatorLibrary.Default.KernelNames().Order().ToList(), Is.EqualTo(declared));
    }

    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Phi2Native.sln"))) return dir.FullName;
        throw new InvalidOperationException("repository root (Phi2Native.sln) not found above the test directory");
    }
}
