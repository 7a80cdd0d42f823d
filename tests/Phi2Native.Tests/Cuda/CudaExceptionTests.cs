using NUnit.Framework;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Native;

namespace Phi2Native.Tests.Cuda;

/// <summary>Error messages of the four libraries, with fake codes; where a library is absent its numeric fallback shows.</summary>
[TestFixture]
public class CudaExceptionTests
{
    [Test]
    public void Format_NamesLibraryCallNameCodeAndText()
    {
        Assert.That(CudaException.Format("CUDA driver", "cuMemAlloc", 2, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"),
            Is.EqualTo("CUDA driver call cuMemAlloc failed: CUDA_ERROR_OUT_OF_MEMORY (2): out of memory"));
    }

    [TestCase("CudaDriver.cuMemAlloc(out ulong p, (nuint)n)", "cuMemAlloc")]
    [TestCase("cuInit(0)", "cuInit")]
    [TestCase(" Nvrtc.nvrtcCompileProgram (p, 0, null)", "nvrtcCompileProgram")]
    [TestCase("status", "status")]
    [TestCase("", "(unknown call)")]
    public void CallName_IsTheFunctionInTheExpression(string expression, string expected)
    {
        Assert.That(CudaException.CallName(expression), Is.EqualTo(expected));
    }

    [Test]
    public void DriverCheck_ThrowsWithTheCallAndCode()
    {
        var e = Assert.Throws<CudaException>(() => CudaDriver.Check(FakeDriverCall(CuResult.ErrorOutOfMemory)))!;
        Assert.That(e.Library, Is.EqualTo("CUDA driver"));
        Assert.That(e.Call, Is.EqualTo("FakeDriverCall"));
        Assert.That(e.Code, Is.EqualTo(2));
        Assert.That(e, Is.InstanceOf<Phi2Exception>());
        if (!CudaAvailability.Probe().IsAvailable)
            Assert.That(e.Message, Is.EqualTo(
                "CUDA driver call FakeDriverCall failed: CUresult 2 (ErrorOutOfMemory) (2): no description (cuGetErrorString unavailable)"));
        else
            Assert.That(e.ErrorName, Is.EqualTo("CUDA_ERROR_OUT_OF_MEMORY"));
    }

    [Test]
    public void DriverCheck_UnknownCode_FallsBackToTheNumber()
    {
        var e = Assert.Throws<CudaException>(() => CudaDriver.Check((CuResult)12345, "cuSomething(x)"))!;
        Assert.That(e.Call, Is.EqualTo("cuSomething"));
        Assert.That(e.Message, Does.Contain("12345"));
        if (!CudaAvailability.Probe().IsAvailable) Assert.That(e.ErrorName, Is.EqualTo("CUresult 12345"));
    }

    [Test]
    public void DriverCheck_Success_DoesNotThrow()
    {
        Assert.That(() => CudaDriver.Check(CuResult.Success), Throws.Nothing);
        Assert.That(() => Nvrtc.Check(NvrtcResult.Success), Throws.Nothing);
        Assert.That(() => Cublas.Check(CublasStatus.Success), Throws.Nothing);
        Assert.That(() => CublasLt.Check(CublasStatus.Success), Throws.Nothing);
    }

    [Test]
    public void NvrtcCheck_NamesTheCompilationError()
    {
        var e = Assert.Throws<CudaException>(() => Nvrtc.Check(NvrtcResult.ErrorCompilation, "Nvrtc.nvrtcCompileProgram(p, 1, opts)"))!;
        Assert.That(e.Library, Is.EqualTo("NVRTC"));
        Assert.That(e.Call, Is.EqualTo("nvrtcCompileProgram"));
        Assert.That(e.Code, Is.EqualTo(6));
        Assert.That(e.ErrorText, Does.Contain("program log"));
        Assert.That(e.ErrorName, Is.EqualTo("NVRTC_ERROR_COMPILATION").Or.EqualTo("nvrtcResult 6 (ErrorCompilation)"));
    }

    [Test]
    public void CublasCheck_NamesTheStatus()
    {
        var e = Assert.Throws<CudaException>(() => Cublas.Check(CublasStatus.NotSupported, "cublasGemmEx(h, ...)"))!;
        Assert.That(e.Library, Is.EqualTo("cuBLAS"));
        Assert.That(e.Call, Is.EqualTo("cublasGemmEx"));
        Assert.That(e.Message, Does.StartWith("cuBLAS call cublasGemmEx failed: "));
        Assert.That(e.ErrorName, Is.EqualTo("CUBLAS_STATUS_NOT_SUPPORTED").Or.EqualTo("cublasStatus_t 15 (NotSupported)"));
    }

    [Test]
    public void CublasLtCheck_NamesTheStatus()
    {
        var e = Assert.Throws<CudaException>(() => CublasLt.Check(CublasStatus.InvalidValue, "cublasLtMatmul(lt, ...)"))!;
        Assert.That(e.Library, Is.EqualTo("cuBLASLt"));
        Assert.That(e.Message, Does.StartWith("cuBLASLt call cublasLtMatmul failed: "));
        Assert.That(e.ErrorName, Is.EqualTo("CUBLAS_STATUS_INVALID_VALUE").Or.EqualTo("cublasStatus_t 7 (InvalidValue)"));
        Assert.That(e.Code, Is.EqualTo(7));
    }

    [Test]
    public void Detail_IsAppendedOnItsOwnLine()
    {
        var e = new CudaException("NVRTC", "nvrtcCompileProgram", 6, "NVRTC_ERROR_COMPILATION", "x", "k.cu(3): error: bad");
        Assert.That(e.Message, Does.EndWith("\nk.cu(3): error: bad"));
    }

    private static CuResult FakeDriverCall(CuResult result) => result;
}
