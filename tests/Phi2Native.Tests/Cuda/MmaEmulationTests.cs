using NUnit.Framework;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Emulator;
using Phi2Native.Tensors;

namespace Phi2Native.Tests.Cuda;

/// <summary>
/// The emulated tensor-core wrappers of kernels/common.cuh (mma_m16n8k16_bf16/f16, ldmatrix_x2/x4 and their
/// .trans forms), through kernels/mma_check.cu (which the GPU device checks run too) and the emulator-only
/// kernels of kernels/emu/test_mma.cu: products against a plain product in
/// double of the same 16-bit inputs, the fragment layout pinned lane by lane to the PTX ISA's table in
/// kernels/common.cuh (a layout that is wrong but self-consistent would pass the product tests and fail on a GPU),
/// and planted bugs - a swapped fragment register, a partial warp, an exited lane, a misaligned row - that
/// must fail.
/// </summary>
[TestFixture, Category("Emulated")]
public unsafe class MmaEmulationTests
{
    /// <summary>The 16-bit input formats of the MMA wrappers.</summary>
    public enum Input { Bf16, F16 }

    private static ushort Round(Input input, float value) =>
        input == Input.Bf16 ? DTypes.SingleToBFloat16(value) : BitConverter.HalfToUInt16Bits((Half)value);

    private static double Widen(Input input, ushort bits) =>
        input == Input.Bf16 ? DTypes.BFloat16ToSingle(bits) : (double)BitConverter.UInt16BitsToHalf(bits);

    private static ushort[] RandomInputs(Input input, int count, Random random) =>
        Enumerable.Range(0, count).Select(_ => Round(input, (float)(random.NextDouble() * 4 - 2))).ToArray();

    /// <summary>
    /// Checks D (m x n, row-major) against C + A * B in double, with A (m x k) and B (k x n) row-major 16-bit
    /// inputs. fp32 accumulation of k exact products from C errs by at most about k * 2^-24 * (|C| + sum |a b|);
    /// the tolerance allows twice that. Returns how many elements are outside it (asserted by the caller).
    /// </summary>
    private static int CountMismatches(Input input, ushort[] a, ushort[] b, float[]? c, float[] d, int m, int n, int k,
        List<string>? report = null)
    {
        int bad = 0;
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double sum = c?[i * n + j] ?? 0, scale = Math.Abs(sum);
                for (int p = 0; p < k; p++)
                {
                    double product = Widen(input, a[i * k + p]) * Widen(input, b[p * n + j]);
                    sum += product;
                    scale += Math.Abs(product);
                }
                double tolerance = 2.0 * (k + 1) * Math.ScaleB(1, -24) * scale + 1e-30;
                if (Math.Abs(d[i * n + j] - sum) <= tolerance) continue;
                bad++;
                report?.Add($"D[{i}][{j}] = {d[i * n + j]:R}, expected {sum:R} (tolerance {tolerance:G3})");
            }
        return bad;
    }

    private static float[] LaunchTile(string kernel, ushort[] a, ushort[] b, float[] c, int bNk, uint threads = 32)
    {
        float[] d = Enumerable.Repeat(float.NaN, 16 * 8).ToArray();
        fixed (ushort* pa = a, pb = b)
        fixed (float* pc = c, pd = d)
        {
            ushort* argA = pa, argB = pb;
            float* argC = pc, argD = pd;
            int argBNk = bNk;
            nint[] args = [(nint)(&argA), (nint)(&argB), (nint)(&argC), (nint)(&argD), (nint)(&argBNk)];
            EmulatorLibrary.Default.LaunchChecked(kernel, (1, 1, 1), (threads, 1, 1), 0, args);
        }
        return d;
    }

    private static float[] LaunchByHand(string kernel, ushort[] a, ushort[] b, float[] c)
    {
        float[] d = Enumerable.Repeat(float.NaN, 16 * 8).ToArray();
        fixed (ushort* pa = a, pb = b)
        fixed (float* pc = c, pd = d)
        {
            ushort* argA = pa, argB = pb;
            float* argC = pc, argD = pd;
            nint[] args = [(nint)(&argA), (nint)(&argB), (nint)(&argC), (nint)(&argD)];
            EmulatorLibrary.Default.LaunchChecked(kernel, (1, 1, 1), (32, 1, 1), 0, args);
        }
        return d;
    }

    /// <summary>B (k x n, row-major) as n x k row-major: the column-major form the non-.trans ldmatrix reads.</summary>
    private static ushort[] Transpose(ushort[] b, int k, int n)
    {
        var t = new ushort[b.Length];
        for (int p = 0; p < k; p++)
            for (int j = 0; j < n; j++) t[j * k + p] = b[p * n + j];
        return t;
    }

    [TestCase(Input.Bf16, false)]
    [TestCase(Input.Bf16, true)]
    [TestCase(Input.F16, false)]
    [TestCase(Input.F16, true)]
    public void ATileProductThroughLdmatrixAndMmaMatchesThePlainProduct(Input input, bool bColumnMajor)
    {
        var random = new Random(input == Input.Bf16 ? 11 : 12);
        ushort[] a = RandomInputs(input, 16 * 16, random), b = RandomInputs(input, 16 * 8, random);
        float[] c = Enumerable.Range(0, 16 * 8).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
        string kernel = input == Input.Bf16 ? "mma_tile_bf16" : "mma_tile_f16";
        float[] d = LaunchTile(kernel, a, bColumnMajor ? Transpose(b, 16, 8) : b, c, bColumnMajor ? 1 : 0);

        var report = new List<string>();
        Assert.That(CountMismatches(input, a, b, c, d, 16, 8, 16, report), Is.Zero, string.Join("\n", report.Take(10)));
        // D must not be C passed through: the products are of order one, C alone is far off.
        Assert.That(CountMismatches(input, a, b, c, c, 16, 8, 16), Is.GreaterThan(100));
    }

    // Codes instead of numbers: A[r][c] = r * 16 + c, B[k][n] = 0x1000 + k * 16 + n, so each 16-bit half of a
    // register names the element it came from. ldmatrix moves bits, so the codes arrive unchanged.
    private static ushort ACode(int row, int col) => (ushort)(row * 16 + col);
    private static ushort BCode(int k, int n) => (ushort)(0x1000 + k * 16 + n);

    /// <summary>Per lane, the 12 registers ldmatrix_fragments_b16 writes (see kernels/mma_check.cu).</summary>
    private static uint[] DumpFragments()
    {
        ushort[] a = new ushort[16 * 16], bKn = new ushort[16 * 8], bNk = new ushort[8 * 16];
        for (int r = 0; r < 16; r++)
            for (int col = 0; col < 16; col++) a[r * 16 + col] = ACode(r, col);
        for (int k = 0; k < 16; k++)
            for (int n = 0; n < 8; n++) bKn[k * 8 + n] = bNk[n * 16 + k] = BCode(k, n);
        uint[] out_ = new uint[32 * 12];
        fixed (ushort* pa = a, pkn = bKn, pnk = bNk)
        fixed (uint* po = out_)
        {
            ushort* argA = pa, argKn = pkn, argNk = pnk;
            uint* argOut = po;
            nint[] args = [(nint)(&argA), (nint)(&argKn), (nint)(&argNk), (nint)(&argOut)];
            EmulatorLibrary.Default.LaunchChecked("ldmatrix_fragments_b16", (1, 1, 1), (32, 1, 1), 0, args);
        }
        return out_;
    }

    private static (ushort Low, ushort High) Halves(uint register) => ((ushort)register, (ushort)(register >> 16));

    [Test]
    public void TheFragmentsEachLaneReceivesFollowThePtxTable()
    {
        uint[] dump = DumpFragments();
        for (int lane = 0; lane < 32; lane++)
        {
            int g = lane >> 2, t = lane % 4;
            for (int j = 0; j < 4; j++)
            {
                // A: a[0] rows g, cols 2t..; a[1] rows g+8; a[2] cols 2t+8..; a[3] both (the PTX ISA's a0..a7 in pairs).
                int row = g + 8 * (j & 1), col = 2 * t + 8 * (j >> 1);
                Assert.That(Halves(dump[lane * 12 + j]), Is.EqualTo((ACode(row, col), ACode(row, col + 1))), $"lane {lane} a[{j}]");
                // ldmatrix .trans of the same four 8x8 blocks: block j's transpose, element (g, 2t + h) = A[2t + h][g] of the block.
                int rowBase = 8 * (j & 1), colBase = 8 * (j >> 1);
                Assert.That(Halves(dump[lane * 12 + 8 + j]),
                    Is.EqualTo((ACode(rowBase + 2 * t, colBase + g), ACode(rowBase + 2 * t + 1, colBase + g))), $"lane {lane} x4.trans r[{j}]");
            }
            for (int j = 0; j < 2; j++)
            {
                // B: b[j] = B[2t + 8j .. +1][g], whether read from k x n (x2.trans) or n x k (x2).
                var expected = (BCode(2 * t + 8 * j, g), BCode(2 * t + 8 * j + 1, g));
                Assert.That(Halves(dump[lane * 12 + 4 + j]), Is.EqualTo(expected), $"lane {lane} b[{j}] from k x n");
                Assert.That(Halves(dump[lane * 12 + 6 + j]), Is.EqualTo(expected), $"lane {lane} b[{j}] from n x k");
            }
        }
    }

    [Test]
    public void LaneFiveHoldsTheElementsTheTableSpellsOut()
    {
        // kernels/common.cuh: "lane 5 (g = 1, t = 1) holds A[1][2..3], A[9][2..3], A[1][10..11], A[9][10..11], B[2..3][1], B[10..11][1]".
        uint[] dump = DumpFragments();
        const int lane = 5;
        Assert.That(Halves(dump[lane * 12 + 0]), Is.EqualTo((ACode(1, 2), ACode(1, 3))));
        Assert.That(Halves(dump[lane * 12 + 1]), Is.EqualTo((ACode(9, 2), ACode(9, 3))));
        Assert.That(Halves(dump[lane * 12 + 2]), Is.EqualTo((ACode(1, 10), ACode(1, 11))));
        Assert.That(Halves(dump[lane * 12 + 3]), Is.EqualTo((ACode(9, 10), ACode(9, 11))));
        Assert.That(Halves(dump[lane * 12 + 4]), Is.EqualTo((BCode(2, 1), BCode(3, 1))));
        Assert.That(Halves(dump[lane * 12 + 5]), Is.EqualTo((BCode(10, 1), BCode(11, 1))));
    }

    [Test]
    public void FragmentsLoadedByHandFromTheTableGiveThePlainProduct()
    {
        // No ldmatrix: the kernel builds every register from common.cuh's table, so this pins the emulated
        // mma's reading of A, B and C (and writing of D) to the table on its own.
        var random = new Random(21);
        ushort[] a = RandomInputs(Input.Bf16, 16 * 16, random), b = RandomInputs(Input.Bf16, 16 * 8, random);
        float[] c = Enumerable.Range(0, 16 * 8).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
        float[] d = LaunchByHand("emu_test_mma_by_hand_bf16", a, b, c);
        var report = new List<string>();
        Assert.That(CountMismatches(Input.Bf16, a, b, c, d, 16, 8, 16, report), Is.Zero, string.Join("\n", report.Take(10)));
    }

    [Test]
    public void SwappingTwoFragmentRegistersGivesAWrongProduct()
    {
        // The planted bug: a[1] (rows g+8, k 0..7) and a[2] (rows g, k 8..15) trade places. Every element of D
        // then mixes the wrong row's values into half of its sum.
        var random = new Random(21);
        ushort[] a = RandomInputs(Input.Bf16, 16 * 16, random), b = RandomInputs(Input.Bf16, 16 * 8, random);
        float[] c = Enumerable.Range(0, 16 * 8).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
        float[] d = LaunchByHand("emu_test_mma_by_hand_swapped_bf16", a, b, c);
        Assert.That(d.All(float.IsFinite), Is.True, "the bug gives plausible numbers, not NaN");
        Assert.That(CountMismatches(Input.Bf16, a, b, c, d, 16, 8, 16), Is.GreaterThan(100));
    }

    [TestCase(32, 16, 32)]
    [TestCase(48, 40, 64)]
    public void AMultiTileProductAccumulatesAcrossKTiles(int m, int n, int k)
    {
        var random = new Random(m + n + k);
        ushort[] a = RandomInputs(Input.Bf16, m * k, random), b = RandomInputs(Input.Bf16, k * n, random);
        float[] d = Enumerable.Repeat(float.NaN, m * n).ToArray();
        fixed (ushort* pa = a, pb = b)
        fixed (float* pd = d)
        {
            ushort* argA = pa, argB = pb;
            float* argD = pd;
            int argM = m, argN = n, argK = k;
            nint[] args = [(nint)(&argA), (nint)(&argB), (nint)(&argD), (nint)(&argM), (nint)(&argN), (nint)(&argK)];
            EmulatorLibrary.Default.LaunchChecked("emu_test_mma_gemm_bf16", ((uint)m / 16, 1, 1), ((uint)(32 * n / 8), 1, 1),
                (16 * k + k * n) * sizeof(ushort), args);
        }
        var report = new List<string>();
        Assert.That(CountMismatches(Input.Bf16, a, b, null, d, m, n, k, report), Is.Zero, string.Join("\n", report.Take(10)));
        // Only the first k tile would leave most elements far off: the loop over k matters.
        Assert.That(CountMismatches(Input.Bf16, a, b, null, FirstKTileOnly(a, b, m, n, k), m, n, k), Is.GreaterThan(m * n / 2));
    }

    /// <summary>The product over k in [0, 16) only, in double: what a kernel that forgot to loop over k would give.</summary>
    private static float[] FirstKTileOnly(ushort[] a, ushort[] b, int m, int n, int k)
    {
        var d = new float[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double sum = 0;
                for (int p = 0; p < 16; p++) sum += Widen(Input.Bf16, a[i * k + p]) * Widen(Input.Bf16, b[p * n + j]);
                d[i * n + j] = (float)sum;
            }
        return d;
    }

    [Test]
    public void APartialWarpFailsTheLaunchNamingTheOperation()
    {
        // 16 threads: the warp's lanes 16..31 do not exist, and .sync.aligned matrix operations need all 32.
        ushort[] a = new ushort[16 * 16], b = new ushort[16 * 8];
        float[] c = new float[16 * 8];
        var e = Assert.Throws<InvalidOperationException>(() => LaunchTile("mma_tile_bf16", a, b, c, 0, threads: 16));
        Assert.That(e!.Message, Does.Contain("kernel mma_tile_bf16")
            .And.Contain("ldmatrix_x4 needs lanes 0xffffffff of warp 0, but lane 16 does not exist")
            .And.Contain("need whole warps"));
    }

    [Test]
    public void ALaneThatExitsBeforeTheMmaFailsTheLaunch()
    {
        float[] d = new float[32];
        fixed (float* pd = d)
        {
            float* argD = pd;
            nint[] args = [(nint)(&argD)];
            var e = Assert.Throws<InvalidOperationException>(() =>
                EmulatorLibrary.Default.LaunchChecked("emu_test_mma_lane_exits", (1, 1, 1), (32, 1, 1), 0, args));
            Assert.That(e!.Message, Does.Contain("emu_test_mma_lane_exits").And.Contain("lane 31 of warp 0, which has exited"));
        }
    }

    [Test]
    public void AMisalignedLdmatrixRowAddressFails()
    {
        ushort[] a = new ushort[16 * 17];
        uint[] out_ = new uint[32 * 4];
        fixed (ushort* pa = a)
        fixed (uint* po = out_)
        {
            ushort* argA = pa;
            uint* argOut = po;
            nint[] args = [(nint)(&argA), (nint)(&argOut)];
            var e = Assert.Throws<InvalidOperationException>(() =>
                EmulatorLibrary.Default.LaunchChecked("emu_test_ldmatrix_misaligned", (1, 1, 1), (32, 1, 1), 0, args));
            Assert.That(e!.Message, Does.Contain("emu_test_ldmatrix_misaligned").And.Contain("ldmatrix_x4: the row address")
                .And.Contain("of lane 0 is not 16-byte aligned"));
        }
    }
}
