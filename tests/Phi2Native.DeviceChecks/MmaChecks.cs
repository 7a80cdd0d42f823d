using System.Runtime.InteropServices;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.DeviceChecks;

/// <summary>
/// kernels/mma_check.cu: the tensor-core wrappers of common.cuh (ldmatrix_*, mma_m16n8k16_*) on one 16x16x8 tile.
/// On the emulator these pass by construction of kernels/emu/mma.h; on a GPU they pin that emulation to the
/// hardware: the fragment dump checks ldmatrix's layout against the PTX ISA's table (kernels/common.cuh), and the products
/// check the mma that consumes it, so a layout that is wrong but self-consistent in the emulator shows here.
/// </summary>
internal static unsafe class MmaChecks
{
    /// <summary>The checks of this family.</summary>
    public static IReadOnlyList<DeviceCheck> All { get; } =
    [
        new("mma_tile_bf16 B k x n (ldmatrix x4, x2.trans)", ["mma_tile_bf16"], device => Tile(device, DType.BF16, bColumnMajor: false)),
        new("mma_tile_bf16 B n x k (ldmatrix x4, x2)", ["mma_tile_bf16"], device => Tile(device, DType.BF16, bColumnMajor: true)),
        new("mma_tile_f16 B k x n (ldmatrix x4, x2.trans)", ["mma_tile_f16"], device => Tile(device, DType.F16, bColumnMajor: false)),
        new("ldmatrix fragment layout (x4, x2, x2.trans, x4.trans)", ["ldmatrix_fragments_b16"], Fragments),
    ];

    /// <summary>The kernels of mma_check.cu; each is launched as one warp (<see cref="Grid"/>, <see cref="Block"/>), no dynamic shared memory.</summary>
    public static IReadOnlyList<string> Kernels { get; } = ["mma_tile_bf16", "mma_tile_f16", "ldmatrix_fragments_b16"];

    /// <summary>One block.</summary>
    public static Dim3 Grid => 1;

    /// <summary>One warp: the tile is one mma's.</summary>
    public static Dim3 Block => 32;

    // D = A * B + C for A 16x16, B 16x8, C 16x8, against the same product in double of the rounded inputs. The
    // products of 16-bit values are exact in fp32; what differs is the order and rounding of the 16 additions,
    // at most about 16 * 2^-23 * (|C| + sum |a b|) <= 17 * 17 * 1.2e-7 here. A wrong fragment index is off by O(1).
    private static CheckResult Tile(IDeviceApi device, DType dtype, bool bColumnMajor)
    {
        string kernel = dtype == DType.BF16 ? "mma_tile_bf16" : "mma_tile_f16";
        int seed = dtype == DType.BF16 ? 31 : 32;
        float[] a = Rounded(dtype, TestData.Uniform(16 * 16, seed)), b = Rounded(dtype, TestData.Uniform(16 * 8, seed + 10));
        float[] c = TestData.Uniform(16 * 8, seed + 20);
        float[] bStored = b;
        if (bColumnMajor)
        {
            bStored = new float[16 * 8];
            for (int k = 0; k < 16; k++)
                for (int n = 0; n < 8; n++) bStored[n * 16 + k] = b[k * 8 + n];
        }

        using var da = DeviceBuffer.Upload(device, dtype, a);
        using var db = DeviceBuffer.Upload(device, dtype, bStored);
        using var dc = DeviceBuffer.Upload(device, DType.F32, c);
        using var dd = DeviceBuffer.Allocate(device, DType.F32, 16 * 8);
        DevicePtr pa = da.Pointer, pb = db.Pointer, pc = dc.Pointer, pd = dd.Pointer;
        int bNk = bColumnMajor ? 1 : 0;
        nint* args = stackalloc nint[] { (nint)(&pa), (nint)(&pb), (nint)(&pc), (nint)(&pd), (nint)(&bNk) };
        device.Launch(kernel, Grid, Block, 0, default, new ReadOnlySpan<nint>(args, 5));

        var expected = new double[16 * 8];
        for (int i = 0; i < 16; i++)
            for (int j = 0; j < 8; j++)
            {
                double sum = c[i * 8 + j];
                for (int k = 0; k < 16; k++) sum += (double)a[i * 16 + k] * b[k * 8 + j];
                expected[i * 8 + j] = sum;
            }
        return CheckResult.Compare("D", dd.Download(), expected, absoluteTolerance: 1e-4, relativeTolerance: 1e-5);
    }

    private static float[] Rounded(DType dtype, float[] values) => DeviceBuffer.Decode(dtype, DeviceBuffer.Encode(dtype, values));

    // Codes instead of numbers, moved as bits: A[r][c] = r * 16 + c, B[k][n] = 0x1000 + k * 16 + n.
    private static ushort ACode(int row, int col) => (ushort)(row * 16 + col);
    private static ushort BCode(int k, int n) => (ushort)(0x1000 + k * 16 + n);

    // Each lane's 12 registers (see mma_check.cu), each as its two 16-bit halves, low first, compared against the
    // PTX ISA's table with g = lane >> 2, t = lane % 4:
    //   A (x4)         r[j] = A[g + 8 (j & 1)][2t + 8 (j >> 1) + h]
    //   B (x2, .trans) r[j] = B[2t + 8j + h][g], from B stored k x n (.trans) or n x k
    //   A (x4.trans)   r[j] = A[8 (j & 1) + 2t + h][8 (j >> 1) + g]: the transpose of each 8x8 block
    private static CheckResult Fragments(IDeviceApi device)
    {
        ushort[] a = new ushort[16 * 16], bKn = new ushort[16 * 8], bNk = new ushort[8 * 16];
        for (int r = 0; r < 16; r++)
            for (int col = 0; col < 16; col++) a[r * 16 + col] = ACode(r, col);
        for (int k = 0; k < 16; k++)
            for (int n = 0; n < 8; n++) bKn[k * 8 + n] = bNk[n * 16 + k] = BCode(k, n);

        using var da = Upload(device, a);
        using var dkn = Upload(device, bKn);
        using var dnk = Upload(device, bNk);
        using var dout = DeviceBuffer.Allocate(device, DType.I32, 32 * 12);
        DevicePtr pa = da.Pointer, pkn = dkn.Pointer, pnk = dnk.Pointer, pout = dout.Pointer;
        nint* args = stackalloc nint[] { (nint)(&pa), (nint)(&pkn), (nint)(&pnk), (nint)(&pout) };
        device.Launch("ldmatrix_fragments_b16", Grid, Block, 0, default, new ReadOnlySpan<nint>(args, 4));
        int[] registers = dout.DownloadInt32();

        var parts = new List<CheckResult>();
        (string What, int First, int Count, Func<int, int, int, ushort> Code)[] groups =
        [
            ("A x4", 0, 4, (lane, j, h) => ACode((lane >> 2) + 8 * (j & 1), 2 * (lane % 4) + 8 * (j >> 1) + h)),
            ("B x2.trans from k x n", 4, 2, (lane, j, h) => BCode(2 * (lane % 4) + 8 * j + h, lane >> 2)),
            ("B x2 from n x k", 6, 2, (lane, j, h) => BCode(2 * (lane % 4) + 8 * j + h, lane >> 2)),
            ("A x4.trans", 8, 4, (lane, j, h) => ACode(8 * (j & 1) + 2 * (lane % 4) + h, 8 * (j >> 1) + (lane >> 2))),
        ];
        foreach (var (what, first, count, code) in groups)
        {
            var actual = new float[32 * count * 2];
            var expected = new float[actual.Length];
            for (int lane = 0; lane < 32; lane++)
                for (int j = 0; j < count; j++)
                    for (int h = 0; h < 2; h++)
                    {
                        uint register = (uint)registers[lane * 12 + first + j];
                        actual[(lane * count + j) * 2 + h] = (ushort)(register >> (16 * h));
                        expected[(lane * count + j) * 2 + h] = code(lane, j, h);
                    }
            parts.Add(CheckResult.Compare($"{what} (flat: lane * {count * 2} + register * 2 + half)", actual, expected, 0, 0));
        }
        return CheckResult.Combine([.. parts]);
    }

    // Raw 16-bit codes, uploaded as bits: BF16 only sizes the buffer (the codes are not meant as numbers).
    private static DeviceBuffer Upload(IDeviceApi device, ushort[] bits)
    {
        var buffer = DeviceBuffer.Allocate(device, DType.BF16, bits.Length);
        try
        {
            device.CopyToDevice(buffer.Pointer, MemoryMarshal.AsBytes(bits.AsSpan()), default);
            return buffer;
        }
        catch
        {
            buffer.Dispose();
            throw;
        }
    }
}
