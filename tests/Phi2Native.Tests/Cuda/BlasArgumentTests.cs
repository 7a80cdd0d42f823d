using NUnit.Framework;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Emulator;
using Phi2Native.Tensors;

namespace Phi2Native.Tests.Cuda;

/// <summary>
/// The calls <see cref="IBlas"/> refuses, on the emulated device: cuBLAS's argument rules (each naming the argument in
/// a <see cref="BlasArgumentException"/>), and operands whose touched extent leaves their allocation (refused by the
/// device like a copy past an allocation's end, before anything is written).
/// </summary>
[TestFixture, Category("Emulated")]
public class BlasArgumentTests
{
    private const BlasOperation N = BlasOperation.NoTranspose, T = BlasOperation.Transpose;

    private EmulatedDevice _device = null!;
    private DeviceBuffer _a = null!, _b = null!, _c = null!;

    [SetUp]
    public void Open()
    {
        _device = new EmulatedDevice();
        _a = DeviceBuffer.Allocate(_device, DType.F32, 64);
        _b = DeviceBuffer.Allocate(_device, DType.F32, 64);
        _c = DeviceBuffer.Allocate(_device, DType.F32, 64);
    }

    [TearDown]
    public void Close() => _device.Dispose();

    // A 4 x 3 x 5 product (m x n x k) with the given lds and types; the buffers hold 64 elements each.
    private void Gemm(BlasOperation ta = N, BlasOperation tb = N, int m = 4, int n = 3, int k = 5, int lda = 4, int ldb = 5, int ldc = 4,
        DType aType = DType.F32, DType bType = DType.F32, DType cType = DType.F32) =>
        _device.Blas.GemmEx(ta, tb, m, n, k, 1, _a.Pointer, aType, lda, _b.Pointer, bType, ldb, 0, _c.Pointer, cType, ldc, default);

    private static void Refused(TestDelegate call, string argument, string fragment)
    {
        var e = Assert.Throws<BlasArgumentException>(call)!;
        Assert.That(e.Argument, Is.EqualTo(argument), e.Message);
        Assert.That(e.Message, Does.Contain(fragment));
        Assert.That(e, Is.InstanceOf<Phi2Exception>());
    }

    [Test]
    public void LeadingDimensionsBelowTheStoredRowsAreRefused()
    {
        Refused(() => Gemm(lda: 3), "lda", "lda = 3 is less than max(1, rows of A as stored) = 4");
        Refused(() => Gemm(ta: T, lda: 4), "lda", "= 5"); // transposed, A is stored k x m: 5 rows
        Refused(() => Gemm(ldb: 4), "ldb", "= 5");
        Refused(() => Gemm(tb: T, ldb: 2), "ldb", "= 3"); // transposed, B is stored n x k: 3 rows
        Refused(() => Gemm(ldc: 3), "ldc", "= 4");
        Refused(() => Gemm(m: 0, lda: 0, ldc: 1), "lda", "max(1, "); // even an empty matrix needs ld >= 1
        Assert.DoesNotThrow(() => Gemm(ta: T, tb: T, lda: 5, ldb: 3, ldc: 4));
    }

    [Test]
    public void NegativeSizesAndBadBatchesAreRefused()
    {
        Refused(() => Gemm(m: -1), "m", "m = -1");
        Refused(() => Gemm(n: -1), "n", "n = -1");
        Refused(() => Gemm(k: -2), "k", "k = -2");
        Refused(() => Gemm(ta: (BlasOperation)2), "transposeA", "not NoTranspose or Transpose");
        Refused(() => _device.Blas.GemmStridedBatchedEx(N, N, 2, 2, 2, 1, _a.Pointer, DType.F32, 2, 4, _b.Pointer, DType.F32, 2, 4,
            0, _c.Pointer, DType.F32, 2, 4, 0, default), "batchCount", "batchCount = 0");
        Refused(() => _device.Blas.GemmStridedBatchedEx(N, N, 2, 2, 2, 1, _a.Pointer, DType.F32, 2, -4, _b.Pointer, DType.F32, 2, 4,
            0, _c.Pointer, DType.F32, 2, 4, 2, default), "strideA", "strideA = -4");
    }

    [Test]
    public void UnsupportedTypeCombinationsAreRefused()
    {
        Refused(() => Gemm(cType: DType.BF16), "cType", "F32 -> F32");
        Refused(() => Gemm(aType: DType.BF16, bType: DType.F16, cType: DType.F32), "bType", "differs from A's");
        Refused(() => Gemm(aType: DType.BF16, bType: DType.BF16, cType: DType.F16), "cType", "BF16 -> BF16 or F32");
        Refused(() => Gemm(aType: DType.I32, bType: DType.I32, cType: DType.I32), "aType", "not supported");
        Refused(() => Gemm(aType: DType.F64, bType: DType.F64, cType: DType.F64), "aType", "not supported");
    }

    [Test]
    public void AnOperandCrossingItsAllocationsEndIsRefusedAndNothingIsWritten()
    {
        // A is 4 x 5 with lda 13: its last column ends at element 4 * 13 + 4 = 56 <= 64; lda 16 ends at 68 > 64.
        Assert.DoesNotThrow(() => Gemm(lda: 13));
        _device.Fill(_c.Pointer, 0xFF, _c.Bytes, default);
        var e = Assert.Throws<EmulatedDeviceException>(() => Gemm(lda: 16))!;
        Assert.That(e.Message, Does.Contain("A (4 x 5 F32, ld 16) touches 272 bytes").And.Contain("cross the end"));
        Assert.That(_c.Download(), Is.All.NaN, "a refused call writes nothing");

        // A batch whose last matrix runs past the end: 3 matrices of 4 x 3 (ldc 4) at stride 25 end at element 62;
        // at stride 27, at 66.
        void Batched(long strideC) => _device.Blas.GemmStridedBatchedEx(N, N, 4, 3, 5, 1, _a.Pointer, DType.F32, 4, 0,
            _b.Pointer, DType.F32, 5, 0, 0, _c.Pointer, DType.F32, 4, strideC, 3, default);
        Assert.DoesNotThrow(() => Batched(25));
        Assert.That(Assert.Throws<EmulatedDeviceException>(() => Batched(27))!.Message, Does.Contain("C (4 x 3 F32, ld 4, stride 27, batch 3)"));
    }

    [Test]
    public void FreedOrForeignMemoryAndUnknownStreamsAreRefused()
    {
        using var other = new EmulatedDevice();
        using var foreign = DeviceBuffer.Allocate(other, DType.F32, 64);
        var e = Assert.Throws<EmulatedDeviceException>(() =>
            _device.Blas.GemmEx(N, N, 4, 3, 5, 1, foreign.Pointer, DType.F32, 4, _b.Pointer, DType.F32, 5, 0, _c.Pointer, DType.F32, 4, default))!;
        Assert.That(e.Message, Does.Contain("A (").And.Contain("inside no live allocation"));

        var freed = _a.Pointer;
        _a.Dispose();
        e = Assert.Throws<EmulatedDeviceException>(() =>
            _device.Blas.GemmEx(N, N, 4, 3, 5, 1, freed, DType.F32, 4, _b.Pointer, DType.F32, 5, 0, _c.Pointer, DType.F32, 4, default))!;
        Assert.That(e.Message, Does.Contain("use after free"));

        Assert.Throws<EmulatedDeviceException>(() =>
            _device.Blas.GemmEx(N, N, 4, 3, 5, 1, _b.Pointer, DType.F32, 4, _b.Pointer, DType.F32, 5, 0, _c.Pointer, DType.F32, 4, new DeviceStream(42)));
        Refused(() => _device.Blas.GemmEx(N, N, 4, 3, 5, 1, DevicePtr.Null, DType.F32, 4, _b.Pointer, DType.F32, 5, 0, _c.Pointer, DType.F32, 4, default),
            "a", "null pointer");
    }

    private LtMatmulArguments Lt(LtEpilogue epilogue = LtEpilogue.Default) => new()
    {
        M = 4, N = 3, K = 5, A = _a.Pointer, AType = DType.F32, Lda = 4, B = _b.Pointer, BType = DType.F32, Ldb = 5,
        D = _c.Pointer, DType = DType.F32, Ldd = 4, Epilogue = epilogue,
    };

    [Test]
    public void LtMatmulRefusesWhatCublasLtRefuses()
    {
        void Run(LtMatmulArguments x) => _device.Blas.LtMatmul(x, default);
        Assert.DoesNotThrow(() => Run(Lt()));
        Refused(() => Run(Lt() with { M = 0 }), "M", "M = 0 must be at least 1");
        Refused(() => Run(Lt() with { Lda = 3 }), "Lda", "Lda = 3 is less than");
        Refused(() => Run(Lt() with { Ldd = 2 }), "Ldd", "Ldd = 2");
        Refused(() => Run(Lt() with { C = _c.Pointer, Ldc = 3, Beta = 1 }), "Ldc", "Ldc = 3");
        Refused(() => Run(Lt() with { Beta = 1 }), "C", "C is null but Beta = 1");
        Refused(() => Run(Lt() with { DType = DType.BF16 }), "DType", "not supported with F32 inputs");
        Refused(() => Run(Lt() with { BatchCount = 0 }), "BatchCount", "at least 1");

        // Epilogue pointers: required where used, refused where not, with cuBLASLt's aux leading-dimension rule.
        Refused(() => Run(Lt(LtEpilogue.Bias)), "Bias", "needs Bias");
        Refused(() => Run(Lt() with { Bias = _b.Pointer }), "Bias", "does not use it");
        Refused(() => Run(Lt(LtEpilogue.Bias) with { Bias = _b.Pointer, BiasType = DType.BF16 }), "BiasType", "D's type");
        Refused(() => Run(Lt(LtEpilogue.GeluAuxBias) with { Bias = _b.Pointer }), "Aux", "needs Aux");
        Refused(() => Run(Lt(LtEpilogue.DGelu) with { Aux = _b.Pointer, AuxLd = 4 }), "AuxLd", "multiple of 8");
        Refused(() => Run(Lt(LtEpilogue.DGelu) with { Aux = _b.Pointer, AuxLd = 8, BatchCount = 2, AuxBatchStride = 20 }), "AuxBatchStride", "multiple of 8");
        Refused(() => Run(Lt(LtEpilogue.BGradB) with { Bias = _b.Pointer, Aux = _a.Pointer, AuxLd = 8 }), "Aux", "does not use it");
        Assert.DoesNotThrow(() => Run(Lt(LtEpilogue.DGelu) with { Aux = _b.Pointer, AuxLd = 8 }));

        // The aux matrix's extent counts too: 3 columns at AuxLd 32 reach element 68 of a 64-element buffer.
        var e = Assert.Throws<EmulatedDeviceException>(() => Run(Lt(LtEpilogue.DGelu) with { Aux = _b.Pointer, AuxLd = 32 }))!;
        Assert.That(e.Message, Does.Contain("Aux (4 x 3 F32, ld 32)"));
    }
}
