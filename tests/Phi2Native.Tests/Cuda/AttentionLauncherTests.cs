using NUnit.Framework;
using NUnit.Framework.Constraints;
using Phi2Native.Backends.Cuda;
using Phi2Native.Backends.Ops.Attention;
using Phi2Native.Cuda;
using Phi2Native.Tensors;
using Phi2Native.Tests.Support;

namespace Phi2Native.Tests.Cuda;

/// <summary>
/// The launchers of attention.cu refuse bad arguments in C#, naming the argument, before anything reaches a kernel; size
/// shared memory as the kernel file documents; and launch nothing (or, backward with Tq = 0, zeros) for empty calls.
/// </summary>
[TestFixture, Category("Emulated")]
public class AttentionLauncherTests : LauncherTest
{
    // Dims of the argument checks: B 1, Tq 2, Tk 3, H 1, D 4 (q 8 floats, k and v 12, lse 2), each tensor 256 bytes apart.
    private const int B = 1, Tq = 2, Tk = 3, H = 1, D = 4;

    protected override int Elements => 1024;

    private DevicePtr At(int slot) => F32Buffer.Pointer.Offset(256L * slot);

    private static IResolveConstraint Named<TException>(string name) where TException : ArgumentException =>
        Throws.InstanceOf<TException>().With.Property("ParamName").EqualTo(name);

    [Test]
    public void SharedMemoryIsTheHeaderCommentsArithmetic()
    {
        Assert.That(AttentionKernels.ForwardSharedBytes(80), Is.EqualTo(35_328));
        Assert.That(AttentionKernels.ForwardSharedBytes(128), Is.EqualTo(53_760));
        Assert.That(AttentionKernels.ForwardSharedBytes(7), Is.EqualTo((3 * 32 * 7 + 32 * 33) * 4));
        Assert.That(AttentionKernels.Tiles(0), Is.Zero);
        Assert.That(AttentionKernels.Tiles(33), Is.EqualTo(2));
    }

    [Test]
    public void ForwardArgumentsAreCheckedByName()
    {
        void Forward(DevicePtr q, DevicePtr k, DevicePtr v, DevicePtr output, DevicePtr lse, int batch = B, int queryTime = Tq, int keyTime = Tk,
            int heads = H, int headDim = D, DType dtype = DType.F32) =>
            AttentionKernels.Attention(Emulated, dtype, q, k, v, output, lse, batch, queryTime, keyTime, heads, headDim);

        Forward(At(0), At(1), At(2), At(3), At(4));
        Forward(At(0), At(1), At(2), At(3), DevicePtr.Null); // logSumExp not needed
        Assert.That(() => Forward(DevicePtr.Null, At(1), At(2), At(3), At(4)), Named<ArgumentNullException>("q"));
        Assert.That(() => Forward(At(0), DevicePtr.Null, At(2), At(3), At(4)), Named<ArgumentNullException>("k"));
        Assert.That(() => Forward(At(0), At(1), DevicePtr.Null, At(3), At(4)), Named<ArgumentNullException>("v"));
        Assert.That(() => Forward(At(0), At(1), At(2), DevicePtr.Null, At(4)), Named<ArgumentNullException>("output"));
        Assert.That(() => Forward(At(0), At(1), At(2), At(3), At(4).Offset(2)), Named<ArgumentException>("logSumExp"));
        Assert.That(() => Forward(At(0), At(1), At(2), At(3), At(4), dtype: DType.F16), Throws.ArgumentException.With.Message.Contains("attention has no F16 kernel"));
        Assert.That(() => Forward(At(0), At(1), At(2), At(3), At(4), headDim: 0), Named<ArgumentOutOfRangeException>("headDim"));
        Assert.That(() => Forward(At(0), At(1), At(2), At(3), At(4), headDim: 129), Named<ArgumentOutOfRangeException>("headDim"));
        Assert.That(() => Forward(At(0), At(1), At(2), At(3), At(4), keyTime: 1), Named<ArgumentOutOfRangeException>("keyTime"));
        Assert.That(() => Forward(At(0), At(1), At(2), At(3), At(4), heads: 0), Named<ArgumentOutOfRangeException>("heads"));
        Assert.That(() => Forward(At(0), At(1), At(2), At(3), At(4), batch: -1), Named<ArgumentOutOfRangeException>("batch"));
        Assert.That(() => Forward(At(0), At(1), At(2), At(3), At(4), queryTime: -1), Named<ArgumentOutOfRangeException>("queryTime"));
        // The output must not overlap an input (other blocks still read k and v), nor logSumExp the output.
        Assert.That(() => Forward(At(0), At(1), At(2), At(1).Offset(16), At(4)), Named<ArgumentException>("output"));
        Assert.That(() => Forward(At(0), At(1), At(2), At(0), At(4)), Named<ArgumentException>("output"));
        Assert.That(() => Forward(At(0), At(1), At(2), At(3), At(3).Offset(28)), Named<ArgumentException>("logSumExp"));
        var bf16 = Bf16Buffer.Pointer;
        Assert.That(() => AttentionKernels.Attention(Emulated, DType.BF16, bf16, bf16.Offset(256), bf16.Offset(513), bf16.Offset(768), DevicePtr.Null, B, Tq, Tk, H, D),
            Named<ArgumentException>("v"));
    }

    [Test]
    public void AnEmptyForwardLaunchesNothing()
    {
        using var output = DeviceBuffer.Allocate(Emulated, DType.F32, 1);
        AttentionKernels.Attention(Emulated, DType.F32, At(0), At(1), At(2), output.Pointer, DevicePtr.Null, 0, Tq, Tk, H, D);
        AttentionKernels.Attention(Emulated, DType.F32, At(0), At(1), At(2), output.Pointer, DevicePtr.Null, B, 0, 0, H, D);
        Assert.That(float.IsNaN(output.Download()[0]), "fresh emulated memory is NaN; nothing may have written it");
    }

    [Test]
    public void CachedArgumentsAreCheckedByName()
    {
        // Caches [1, 5, 1, 4] (80 bytes each), key times I32 [1].
        using var times = DeviceBuffer.Upload(Emulated, new[] { 3 });
        void Cached(DevicePtr q, DevicePtr keyCache, DevicePtr valueCache, DevicePtr rowKeyTimes, DevicePtr output, int queryTime = Tq, int capacity = 5,
            DevicePtr logSumExp = default) =>
            AttentionKernels.CachedAttention(Emulated, DType.F32, q, keyCache, valueCache, rowKeyTimes, output, B, queryTime, capacity, H, D, logSumExp: logSumExp);

        Cached(At(0), At(1), At(2), times.Pointer, At(3));
        Cached(At(0), At(1), At(2), times.Pointer, At(3), queryTime: 1, logSumExp: At(4));
        Assert.That(() => Cached(At(0), DevicePtr.Null, At(2), times.Pointer, At(3)), Named<ArgumentNullException>("keyCache"));
        Assert.That(() => Cached(At(0), At(1), DevicePtr.Null, times.Pointer, At(3)), Named<ArgumentNullException>("valueCache"));
        Assert.That(() => Cached(At(0), At(1), At(2), DevicePtr.Null, At(3)), Named<ArgumentNullException>("rowKeyTimes"));
        Assert.That(() => Cached(At(0), At(1), At(2), times.Pointer.Offset(2), At(3)), Named<ArgumentException>("rowKeyTimes"));
        Assert.That(() => Cached(At(0), At(1), At(2), times.Pointer, At(3), capacity: 1), Named<ArgumentOutOfRangeException>("capacity"));
        // The whole cache counts, not only some rows: row 4 of the key cache is at byte 64.
        Assert.That(() => Cached(At(0), At(1), At(2), times.Pointer, At(1).Offset(64)), Named<ArgumentException>("output"));
        Assert.That(() => Cached(At(0), At(1), At(2), times.Pointer, At(3), logSumExp: At(2).Offset(76)), Named<ArgumentException>("logSumExp"));
        Assert.That(() => Cached(At(0), At(1), At(2), At(3).Offset(28), At(3)), Named<ArgumentException>("output"));
        Assert.That(() => AttentionKernels.CachedAttention(Emulated, DType.F16, At(0), At(1), At(2), times.Pointer, At(3), B, Tq, 5, H, D),
            Throws.ArgumentException.With.Message.Contains("cached_attention has no F16 kernel"));
    }

    [Test]
    public void BackwardSharedMemoryIsTheHeaderCommentsArithmetic()
    {
        Assert.That(AttentionKernels.BackwardSharedBytes(80), Is.EqualTo(50_176));
        Assert.That(AttentionKernels.BackwardSharedBytes(128), Is.EqualTo(74_752));
    }

    [Test]
    public void TheTensorCoreBackwardIsChosenByDtypeHeadDimAndAlignment()
    {
        // attention_mma_backward.cu's header: (2 * 64 + 4 * S) * (D + 8) 16-bit elements + 4 * S floats, S = 16 at bound 80, else 32.
        Assert.That(AttentionKernels.TensorCoreBackwardSharedBytes(80), Is.EqualTo(34_048));
        Assert.That(AttentionKernels.TensorCoreBackwardSharedBytes(128), Is.EqualTo(70_144));
        Assert.That(AttentionKernels.TensorCoreBackwardSharedBytes(16), Is.EqualTo(256 * 24 * 2 + 4 * 32 * 4));
        int[] dims = [16, 32, 48, 64, 80, 96, 112, 128];
        Assert.That(dims.Select(d => AttentionKernels.TensorCoreBackwardKernel(DType.BF16, d)), Is.EqualTo(new[]
        {
            "attention_mma_backward_bf16_d32", "attention_mma_backward_bf16_d32", "attention_mma_backward_bf16_d64", "attention_mma_backward_bf16_d64",
            "attention_mma_backward_bf16_d80", "attention_mma_backward_bf16_d128", "attention_mma_backward_bf16_d128", "attention_mma_backward_bf16_d128",
        }));
        var aligned = new DevicePtr(1 << 20);
        Assert.That(AttentionKernels.BackwardUsesTensorCores(DType.BF16, 80, aligned, aligned, aligned, aligned), Is.True);
        Assert.That(AttentionKernels.BackwardUsesTensorCores(DType.F16, 16, aligned, aligned, aligned, aligned), Is.True);
        Assert.That(AttentionKernels.BackwardUsesTensorCores(DType.F32, 80, aligned, aligned, aligned, aligned), Is.False);
        Assert.That(AttentionKernels.BackwardUsesTensorCores(DType.BF16, 72, aligned, aligned, aligned, aligned), Is.False);
        Assert.That(AttentionKernels.BackwardUsesTensorCores(DType.BF16, 144, aligned, aligned, aligned, aligned), Is.False);
        Assert.That(AttentionKernels.BackwardUsesTensorCores(DType.BF16, 80, aligned.Offset(8), aligned, aligned, aligned), Is.False, "dO misaligned");
        Assert.That(AttentionKernels.BackwardUsesTensorCores(DType.BF16, 80, aligned, aligned, aligned, aligned.Offset(2)), Is.False, "v misaligned");
    }

    [Test]
    public void BackwardArgumentsAreCheckedByName()
    {
        // dOutput 0, q 1, k 2, v 3, output 4, logSumExp 5, delta 6, dq 7, dk 8, dv 9.
        void Backward(DevicePtr dq, DevicePtr dk, DevicePtr dv, DevicePtr delta, DevicePtr? dOutput = null, DevicePtr? logSumExp = null,
            int keyTime = Tk, int headDim = D, DType dtype = DType.F32) =>
            AttentionKernels.AttentionBackward(Emulated, dtype, dOutput ?? At(0), At(1), At(2), At(3), At(4), logSumExp ?? At(5), delta, dq, dk, dv,
                B, Tq, keyTime, H, headDim);

        Backward(At(7), At(8), At(9), At(6));
        Backward(DevicePtr.Null, DevicePtr.Null, At(9), DevicePtr.Null); // dv alone needs no delta
        Backward(DevicePtr.Null, DevicePtr.Null, DevicePtr.Null, DevicePtr.Null); // nothing wanted: nothing launched
        Assert.That(() => Backward(At(7), DevicePtr.Null, DevicePtr.Null, DevicePtr.Null), Named<ArgumentNullException>("delta"));
        Assert.That(() => Backward(DevicePtr.Null, At(8), DevicePtr.Null, DevicePtr.Null), Named<ArgumentNullException>("delta"));
        Assert.That(() => Backward(At(7), At(8), At(9), At(6), dOutput: DevicePtr.Null), Named<ArgumentNullException>("dOutput"));
        Assert.That(() => Backward(At(7), At(8), At(9), At(6), logSumExp: DevicePtr.Null), Named<ArgumentNullException>("logSumExp"));
        Assert.That(() => Backward(At(7).Offset(1), At(8), At(9), At(6)), Named<ArgumentException>("dq"));
        Assert.That(() => Backward(At(7), At(8), At(9), At(6), keyTime: 1), Named<ArgumentOutOfRangeException>("keyTime"));
        Assert.That(() => Backward(At(7), At(8), At(9), At(6), headDim: 200), Named<ArgumentOutOfRangeException>("headDim"));
        Assert.That(() => Backward(At(7), At(8), At(9), At(6), dtype: DType.F16), Throws.ArgumentException.With.Message.Contains("attention_backward has no F16 kernel"));
        // Outputs apart from the inputs and from each other.
        Assert.That(() => Backward(At(1), At(8), At(9), At(6)), Named<ArgumentException>("dq"));
        Assert.That(() => Backward(At(7), At(3).Offset(8), At(9), At(6)), Named<ArgumentException>("dk"));
        Assert.That(() => Backward(At(7), At(8), At(8), At(6)), Named<ArgumentException>("dv"));
        Assert.That(() => Backward(At(7), At(8), At(7).Offset(16), At(6)), Named<ArgumentException>("dv"));
        Assert.That(() => Backward(At(7), At(8), At(9), At(5)), Named<ArgumentException>("delta"));
        Assert.That(() => Backward(At(6), At(8), At(9), At(6)), Named<ArgumentException>("dq"));
    }

    [Test]
    public void BackwardWithoutQueriesWritesZeroKeyGradients()
    {
        // Tq = 0, Tk = 3: nothing attends, so dk = dv = 0 (as the CPU backend writes them).
        using var dk = DeviceBuffer.Allocate(Emulated, DType.F32, Tk * H * D);
        using var dv = DeviceBuffer.Allocate(Emulated, DType.BF16, Tk * H * D);
        AttentionKernels.AttentionBackward(Emulated, DType.F32, At(0), At(1), At(2), At(3), At(4), At(5), At(6), DevicePtr.Null, dk.Pointer, DevicePtr.Null,
            B, 0, Tk, H, D);
        Assert.That(dk.Download(), Is.All.EqualTo(0f));
        var bf16 = Bf16Buffer.Pointer;
        AttentionKernels.AttentionBackward(Emulated, DType.BF16, bf16, bf16.Offset(256), bf16.Offset(512), bf16.Offset(768), bf16.Offset(1024), At(5), DevicePtr.Null,
            DevicePtr.Null, DevicePtr.Null, dv.Pointer, B, 0, Tk, H, D);
        Assert.That(dv.Download(), Is.All.EqualTo(0f));
        // The tensor-core backward (bf16, D 16) likewise.
        using var tensorCoreDk = DeviceBuffer.Allocate(Emulated, DType.BF16, Tk * H * 16);
        using var tensorCoreDv = DeviceBuffer.Allocate(Emulated, DType.BF16, Tk * H * 16);
        Assert.That(AttentionKernels.BackwardUsesTensorCores(DType.BF16, 16, bf16, bf16.Offset(256), bf16.Offset(512), bf16.Offset(768)), Is.True);
        AttentionKernels.AttentionBackward(Emulated, DType.BF16, bf16, bf16.Offset(256), bf16.Offset(512), bf16.Offset(768), bf16.Offset(1024), At(5), At(6),
            DevicePtr.Null, tensorCoreDk.Pointer, tensorCoreDv.Pointer, B, 0, Tk, H, 16);
        Assert.That(tensorCoreDk.Download(), Is.All.EqualTo(0f));
        Assert.That(tensorCoreDv.Download(), Is.All.EqualTo(0f));
    }
}
