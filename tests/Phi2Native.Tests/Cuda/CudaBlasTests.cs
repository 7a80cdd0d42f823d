using NUnit.Framework;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Gpu;
using Phi2Native.Cuda.Native;
using Phi2Native.Tensors;

namespace Phi2Native.Tests.Cuda;

/// <summary>
/// The parts of <see cref="CudaBlas"/> that need no GPU: how engine values map to cuBLAS's, and the alignment it
/// promises cuBLASLt's heuristic. The calls themselves are checked on a GPU by the device checks (BlasChecks).
/// </summary>
[TestFixture]
public class CudaBlasTests
{
    [Test]
    public void TypesAndEpiloguesMapToCublasValues()
    {
        Assert.That((int)CudaBlas.ToCublas(DType.F32), Is.EqualTo(0));
        Assert.That((int)CudaBlas.ToCublas(DType.F16), Is.EqualTo(2));
        Assert.That((int)CudaBlas.ToCublas(DType.BF16), Is.EqualTo(14));
        Assert.Throws<ArgumentOutOfRangeException>(() => CudaBlas.ToCublas(DType.I32));

        Assert.That((int)CudaBlas.ToCublas(LtEpilogue.Default), Is.EqualTo(1));
        Assert.That((int)CudaBlas.ToCublas(LtEpilogue.Bias), Is.EqualTo(4));
        Assert.That((int)CudaBlas.ToCublas(LtEpilogue.GeluAuxBias), Is.EqualTo(164));
        Assert.That((int)CudaBlas.ToCublas(LtEpilogue.DGelu), Is.EqualTo(192));
        Assert.That((int)CudaBlas.ToCublas(LtEpilogue.BGradB), Is.EqualTo(512));

        // BlasOperation is cast straight to cublasOperation_t.
        Assert.That((int)BlasOperation.NoTranspose, Is.EqualTo((int)CublasOperation.N));
        Assert.That((int)BlasOperation.Transpose, Is.EqualTo((int)CublasOperation.T));
    }

    [Test]
    public void AlignmentIsTheLowestSetBitUpTo256()
    {
        Assert.That(CudaBlasLtPlanKey.Alignment(new DevicePtr(0x7f00_0000_1000)), Is.EqualTo(256));
        Assert.That(CudaBlasLtPlanKey.Alignment(new DevicePtr(0x1000 + 2)), Is.EqualTo(2));
        Assert.That(CudaBlasLtPlanKey.Alignment(new DevicePtr(0x1000 + 48)), Is.EqualTo(16));
        Assert.That(CudaBlasLtPlanKey.Alignment(new DevicePtr(0x1000 + 128)), Is.EqualTo(128));
        Assert.That(CudaBlasLtPlanKey.Alignment(DevicePtr.Null), Is.EqualTo(256));
    }

    [Test]
    public void PlansDifferByAlignmentAndEpilogueButNotByPointerValues()
    {
        var x = new LtMatmulArguments
        {
            M = 8, N = 4, K = 16, A = new(0x10000), AType = DType.BF16, Lda = 8, B = new(0x20000), BType = DType.BF16, Ldb = 16,
            C = new(0x30000), Ldc = 8, D = new(0x30000), DType = DType.BF16, Ldd = 8,
        };
        Assert.That(CudaBlasLtPlanKey.Of(x with { A = new(0x40000) }), Is.EqualTo(CudaBlasLtPlanKey.Of(x)));
        Assert.That(CudaBlasLtPlanKey.Of(x with { A = new(0x40002) }), Is.Not.EqualTo(CudaBlasLtPlanKey.Of(x)));
        Assert.That(CudaBlasLtPlanKey.Of(x with { Epilogue = LtEpilogue.BGradB, Bias = new(0x50000) }), Is.Not.EqualTo(CudaBlasLtPlanKey.Of(x)));
    }
}
