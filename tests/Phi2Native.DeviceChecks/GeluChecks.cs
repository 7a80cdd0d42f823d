using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Activation;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.DeviceChecks;

/// <summary>
/// kernels/gelu.cu through <see cref="GeluKernels"/>, against the CPU backend's GeluNew and GeluNewBackward on the same
/// widened inputs (results cast to the dtype by its Cast). gelu_new goes through tanh, whose last bits differ between
/// CUDA's tanhf and .NET's, so values are held to the forward and gradient tolerances rather than bit equality; the
/// inputs cover both tails (where 1 + tanh u cancels), zero, signed zero, values large enough that x^3 overflows fp32,
/// NaN and the infinities (the CPU's own arithmetic gives NaN for -Inf forward and for either infinity backward, and
/// the kernels must agree). The fused bias + gelu_new is checked against the unfused composition on the CPU: Add of
/// the broadcast bias, cast to the dtype (its saved pre-activation must match that bit for bit), then GeluNew; its
/// backward against GeluNewBackward at that pre-activation and the column sums of the fp32 dX added, in double, to a
/// dBias that already holds a gradient.
/// </summary>
public static class GeluChecks
{
    private static readonly DType[] Types = [DType.F32, DType.BF16, DType.F16];

    /// <summary>Which outputs a bias backward check asks for.</summary>
    [Flags]
    private enum Wanted { DX = 1, DBias = 2, All = DX | DBias }

    /// <summary>The checks of this family.</summary>
    public static IReadOnlyList<DeviceCheck> All { get; } =
    [
        .. Types.Select(d => Forward(d, 1001)),
        Forward(DType.F32, 77, inPlace: true),
        Forward(DType.BF16, 77, inPlace: true),
        Forward(DType.F32, 1),
        .. Types.Select(d => Backward(d, 1001)),
        Backward(DType.F32, 77, inPlace: true),
        Backward(DType.BF16, 77, inPlace: true),
        BiasForward(DType.F32, 4, 80),
        BiasForward(DType.F32, 3, 2561),
        BiasForward(DType.F32, 5, 7, maxRowBlocks: 2),
        BiasForward(DType.BF16, 4, 80),
        BiasForward(DType.BF16, 3, 2561),
        BiasForward(DType.F16, 4, 80),
        BiasForward(DType.F32, 4, 80, savePre: false),
        BiasForward(DType.BF16, 5, 80, preInPlace: true, maxRowBlocks: 3),
        BiasBackward(DType.F32, 4, 80, Wanted.All),
        BiasBackward(DType.F32, 3, 2561, Wanted.All),
        BiasBackward(DType.F32, 9, 7, Wanted.All),
        BiasBackward(DType.F32, 70, 136, Wanted.All),
        BiasBackward(DType.F32, 4, 80, Wanted.DX),
        BiasBackward(DType.F32, 4, 80, Wanted.DBias),
        BiasBackward(DType.BF16, 4, 80, Wanted.All),
        BiasBackward(DType.BF16, 3, 2561, Wanted.All),
        BiasBackward(DType.BF16, 70, 136, Wanted.DBias),
        BiasBackward(DType.F16, 4, 80, Wanted.All),
        BiasBackward(DType.F32, 4, 80, Wanted.All, inPlace: true),
    ];

    private static string Suffix(DType dtype) => KernelName.Suffix(dtype);

    private static DeviceCheck Forward(DType dtype, int n, bool inPlace = false) =>
        new($"gelu_new_{Suffix(dtype)} n={n}{(inPlace ? " in place" : "")}", [$"gelu_new_{Suffix(dtype)}"],
            device => RunForward(device, dtype, n, inPlace));

    private static DeviceCheck Backward(DType dtype, int n, bool inPlace = false) =>
        new($"gelu_new_backward_{Suffix(dtype)} n={n}{(inPlace ? " dX in place of dY" : "")}", [$"gelu_new_backward_{Suffix(dtype)}"],
            device => RunBackward(device, dtype, n, inPlace));

    private static DeviceCheck BiasForward(DType dtype, int rows, int channels, bool savePre = true, bool preInPlace = false,
        int maxRowBlocks = GeluKernels.MaxRowBlocks)
    {
        string what = !savePre ? " pre not saved" : preInPlace ? " pre in place of x" : "";
        string grid = maxRowBlocks < rows ? $", {maxRowBlocks} row blocks" : "";
        return new($"bias_gelu_new_{Suffix(dtype)} [{rows}, {channels}]{what}{grid}", [$"bias_gelu_new_{Suffix(dtype)}"],
            device => RunBiasForward(device, dtype, rows, channels, savePre, preInPlace, maxRowBlocks));
    }

    private static DeviceCheck BiasBackward(DType dtype, int rows, int channels, Wanted wanted, bool inPlace = false)
    {
        string what = wanted switch { Wanted.All => "dX and dBias", Wanted.DX => "dX only, dBias null", _ => "dBias only, dX null" };
        return new($"bias_gelu_new_backward_{Suffix(dtype)} [{rows}, {channels}] {what}{(inPlace ? ", dX in place of dY" : "")}",
            [$"bias_gelu_new_{Suffix(dtype)}", $"bias_gelu_new_backward_{Suffix(dtype)}"],
            device => RunBiasBackward(device, dtype, rows, channels, wanted, inPlace));
    }

    /// <summary>
    /// Uniform values in [-6, 6) (past both knees of gelu_new) led by special ones: signed zeros, the tails where
    /// 1 + tanh u cancels (-3.5, -5.25, -9), large values where tanh saturates (12, +-1e13) or u overflows fp32
    /// (+-1e15; all four are Inf in F16), a tiny value, NaN and the infinities.
    /// </summary>
    private static float[] Inputs(int n, int seed)
    {
        float[] values = TestData.Uniform(n, seed, scale: 6f);
        float[] specials = [0f, -0f, -3.5f, -5.25f, -9f, 12f, 1e13f, -1e13f, 1e15f, -1e15f, 3e-20f, float.NaN, float.PositiveInfinity, float.NegativeInfinity];
        Array.Copy(specials, values, Math.Min(n, specials.Length));
        return values;
    }

    private static CheckResult RunForward(IDeviceApi device, DType dtype, int n, bool inPlace)
    {
        float[] x = Inputs(n, seed: 21);
        using var dx = DeviceBuffer.Upload(device, dtype, x);
        using var dy = inPlace ? null : DeviceBuffer.Allocate(device, dtype, n);
        var output = dy ?? dx;
        GeluKernels.GeluNew(device, dtype, dx.Pointer, output.Pointer, n);
        float[] actual = output.Download();

        using var cpu = new CpuReference();
        using var cx = cpu.Stored(dtype, x, n);
        using var cy = GeluNewOp.Forward(cx);
        return Tolerances.Forward(dtype).Compare("y", actual, cpu.CastTo(dtype, cy));
    }

    private static CheckResult RunBackward(IDeviceApi device, DType dtype, int n, bool inPlace)
    {
        float[] x = Inputs(n, seed: 22);
        float[] dy = TestData.Uniform(n, seed: 23, scale: 2f);
        using var bx = DeviceBuffer.Upload(device, dtype, x);
        using var bdy = DeviceBuffer.Upload(device, dtype, dy);
        using var bdx = inPlace ? null : DeviceBuffer.Allocate(device, dtype, n);
        var output = bdx ?? bdy;
        GeluKernels.GeluNewBackward(device, dtype, bdy.Pointer, bx.Pointer, output.Pointer, n);
        float[] actual = output.Download();

        using var cpu = new CpuReference();
        using var cx = cpu.Stored(dtype, x, n);
        using var cdy = cpu.Stored(dtype, dy, n);
        using var cdx = cpu.Backend.Empty([n], DType.F32);
        GeluNewOp.Backward(cdy, cx, cdx);
        return Tolerances.Gradient(dtype).Compare("dX", actual, cpu.CastTo(dtype, cdx));
    }

    private sealed record BiasInputs(float[] X, float[] Bias);

    // fc1's output before its bias, and a bias of its own scale, so h = x + bias spans both knees of gelu_new.
    private static BiasInputs MakeBiasInputs(int rows, int channels)
    {
        float[] x = TestData.Uniform(rows * channels, seed: 700 + channels, scale: 4f);
        float[] bias = TestData.Uniform(channels, seed: 800 + channels, scale: 2f);
        if (x.Length > 3)
        {
            x[0] = float.NaN;
            x[1] = -1e13f;
            x[2] = 1e13f;
        }
        return new(x, bias);
    }

    /// <summary>The CPU's pre-activation: x + bias broadcast over the rows by IBackend.Add, cast to the dtype (as stored).</summary>
    private static float[] CpuPre(CpuReference cpu, DType dtype, BiasInputs inputs, int rows, int channels)
    {
        float[] broadcast = new float[rows * channels];
        float[] storedBias = CpuReference.RoundTrip(dtype, inputs.Bias);
        for (int r = 0; r < rows; r++) Array.Copy(storedBias, 0, broadcast, r * channels, channels);
        using var cx = cpu.Stored(dtype, inputs.X, rows, channels);
        using var cb = cpu.F32(broadcast, rows, channels);
        using var sum = cpu.Backend.Add(cx, cb);
        return cpu.CastTo(dtype, sum);
    }

    private static CheckResult RunBiasForward(IDeviceApi device, DType dtype, int rows, int channels, bool savePre, bool preInPlace, int maxRowBlocks)
    {
        var inputs = MakeBiasInputs(rows, channels);
        using var x = DeviceBuffer.Upload(device, dtype, inputs.X);
        using var bias = DeviceBuffer.Upload(device, dtype, inputs.Bias);
        using var y = DeviceBuffer.Allocate(device, dtype, rows * channels);
        using var pre = savePre && !preInPlace ? DeviceBuffer.Allocate(device, dtype, rows * channels) : null;
        var preOut = preInPlace ? x : pre;
        GeluKernels.BiasGeluNew(device, dtype, x.Pointer, bias.Pointer, y.Pointer, preOut?.Pointer ?? DevicePtr.Null, rows, channels, maxRowBlocks: maxRowBlocks);

        using var cpu = new CpuReference();
        float[] expectedPre = CpuPre(cpu, dtype, inputs, rows, channels);
        using var ch = cpu.F32(expectedPre, rows, channels);
        using var cy = GeluNewOp.Forward(ch);
        var parts = new List<CheckResult> { Tolerances.Forward(dtype).Compare("y", y.Download(), cpu.CastTo(dtype, cy)) };
        // One fp32 add, one rounding on both sides: bit for bit.
        if (preOut is not null) parts.Add(CheckResult.CompareBits("pre", preOut.Download(), expectedPre));
        else parts.Add(CheckResult.CompareBits("x (not written when pre is null)", x.Download(), CpuReference.RoundTrip(dtype, inputs.X)));
        return CheckResult.Combine([.. parts]);
    }

    private static CheckResult RunBiasBackward(IDeviceApi device, DType dtype, int rows, int channels, Wanted wanted, bool inPlace)
    {
        var inputs = MakeBiasInputs(rows, channels);
        float[] dy = TestData.Uniform(rows * channels, seed: 900 + channels, scale: 2f);
        // What earlier micro-batches left in dBias: the kernel must add to it, not overwrite it.
        float[] prior = TestData.Uniform(channels, seed: 1000 + channels, scale: 3f);
        bool wantDx = wanted.HasFlag(Wanted.DX), wantBias = wanted.HasFlag(Wanted.DBias);

        using var x = DeviceBuffer.Upload(device, dtype, inputs.X);
        using var bias = DeviceBuffer.Upload(device, dtype, inputs.Bias);
        using var y = DeviceBuffer.Allocate(device, dtype, rows * channels);
        using var pre = DeviceBuffer.Allocate(device, dtype, rows * channels);
        using var dY = DeviceBuffer.Upload(device, dtype, dy);
        using var dX = wantDx && !inPlace ? DeviceBuffer.Allocate(device, dtype, rows * channels) : null;
        using var dBias = wantBias ? DeviceBuffer.Upload(device, DType.F32, prior) : null;
        var dxOut = wantDx ? dX ?? dY : null;
        GeluKernels.BiasGeluNew(device, dtype, x.Pointer, bias.Pointer, y.Pointer, pre.Pointer, rows, channels);
        GeluKernels.BiasGeluNewBackward(device, dtype, dY.Pointer, pre.Pointer, dxOut?.Pointer ?? DevicePtr.Null, dBias?.Pointer ?? DevicePtr.Null,
            rows, channels);

        using var cpu = new CpuReference();
        float[] expectedPre = CpuPre(cpu, dtype, inputs, rows, channels);
        using var ch = cpu.F32(expectedPre, rows, channels);
        using var cdy = cpu.Stored(dtype, dy, rows, channels);
        using var cdx = cpu.Backend.Empty([rows, channels], DType.F32);
        GeluNewOp.Backward(cdy, ch, cdx);
        float[] dxF32 = cdx.ToSingleArray();
        var parts = new List<CheckResult> { CheckResult.CompareBits("pre", pre.Download(), expectedPre) };
        if (wantDx) parts.Add(Tolerances.Gradient(dtype).Compare("dX", dxOut!.Download(), cpu.CastTo(dtype, cdx)));
        if (wantBias)
        {
            // dBias += column sums of the fp32 dX, in double here; fp32 sums in another order on the device.
            var expected = new double[channels];
            for (int c = 0; c < channels; c++)
            {
                double sum = prior[c];
                for (int r = 0; r < rows; r++) sum += dxF32[r * channels + c];
                expected[c] = sum;
            }
            var t = Tolerances.Gradient(DType.F32);
            parts.Add(CheckResult.Compare("dBias", dBias!.Download(), expected, t.Absolute, t.Relative));
        }
        return CheckResult.Combine([.. parts]);
    }
}
