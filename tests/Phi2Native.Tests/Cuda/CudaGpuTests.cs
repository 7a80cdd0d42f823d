using System.Runtime.InteropServices;
using NUnit.Framework;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Native;

namespace Phi2Native.Tests.Cuda;

/// <summary>
/// Exercises the bindings on a real GPU: context, memory round trip, NVRTC compile, module load, launch,
/// events, cuBLAS GemmEx and a cuBLASLt matmul with the BIAS epilogue. Ignored, with the probe's reason,
/// where there is no GPU; failed where a GPU is present but CUDA cannot use it (<see cref="Support.GpuGate"/>).
/// </summary>
[TestFixture, Category("Gpu"), NonParallelizable]
public unsafe class CudaGpuTests
{
    private int _device;
    private nint _context;

    private const string AddOneSource = """
        extern "C" __global__ void add_one(float* x, int n)
        {
            int i = blockIdx.x * blockDim.x + threadIdx.x;
            if (i < n) x[i] += 1.0f;
        }
        """;

    [OneTimeSetUp]
    public void SetUp()
    {
        Support.GpuGate.Require();
        CudaDriver.Check(CudaDriver.cuDeviceGet(out _device, 0));
        CudaDriver.Check(CudaDriver.cuDevicePrimaryCtxRetain(out _context, _device));
        CudaDriver.Check(CudaDriver.cuCtxSetCurrent(_context));
    }

    [OneTimeTearDown]
    public void TearDown()
    {
        if (_context != 0) CudaDriver.Check(CudaDriver.cuDevicePrimaryCtxRelease(_device));
    }

    [SetUp]
    public void MakeCurrent()
    {
        // NUnit may run each test on another thread; the context is per thread.
        CudaDriver.Check(CudaDriver.cuCtxSetCurrent(_context));
    }

    [Test]
    public void Memory_RoundTrips_SyncAndAsync_WithMemset()
    {
        const int n = 1000;
        var src = Enumerable.Range(0, n).Select(i => (float)i * 0.5f).ToArray();
        var dst = new float[n];
        CudaDriver.Check(CudaDriver.cuMemAlloc(out ulong d, n * sizeof(float)));
        CudaDriver.Check(CudaDriver.cuStreamCreate(out nint stream, CudaDriver.StreamNonBlocking));
        CudaDriver.Check(CudaDriver.cuMemAllocHost(out nint pinned, n * sizeof(float)));
        try
        {
            fixed (float* s = src) CudaDriver.Check(CudaDriver.cuMemcpyHtoD(d, s, n * sizeof(float)));
            fixed (float* t = dst) CudaDriver.Check(CudaDriver.cuMemcpyDtoH(t, d, n * sizeof(float)));
            Assert.That(dst, Is.EqualTo(src));

            CudaDriver.Check(CudaDriver.cuMemsetD8Async(d, 0, n * sizeof(float), stream));
            CudaDriver.Check(CudaDriver.cuMemcpyDtoHAsync((void*)pinned, d, n * sizeof(float), stream));
            CudaDriver.Check(CudaDriver.cuStreamSynchronize(stream));
            Assert.That(new ReadOnlySpan<float>((void*)pinned, n).ToArray(), Is.All.EqualTo(0f));
        }
        finally
        {
            CudaDriver.Check(CudaDriver.cuMemFreeHost(pinned));
            CudaDriver.Check(CudaDriver.cuStreamDestroy(stream));
            CudaDriver.Check(CudaDriver.cuMemFree(d));
        }
    }

    [Test]
    public void Nvrtc_CompilesToCubin_AndTheKernelRuns()
    {
        Nvrtc.Check(Nvrtc.nvrtcVersion(out int major, out int minor));
        TestContext.Progress.WriteLine($"NVRTC {major}.{minor} from {NativeLibraryResolver.Load(NativeLibraryResolver.Nvrtc).LoadedFrom}");
        string arch = CudaAvailability.Probe().Devices[0].Architecture;

        Nvrtc.Check(Nvrtc.nvrtcCreateProgram(out nint program, AddOneSource, "add_one.cu", 0, null, null));
        byte[] cubin;
        try
        {
            var r = Nvrtc.Compile(program, [$"--gpu-architecture={arch}", "--std=c++17"]);
            if (r != NvrtcResult.Success) throw new CudaException("NVRTC", "nvrtcCompileProgram", (int)r, r.ToString(), "compile failed", Nvrtc.GetLog(program));
            cubin = Nvrtc.GetCubin(program);
            Assert.That(Nvrtc.GetPtx(program).Length, Is.GreaterThan(0), "PTX is also available");
        }
        finally
        {
            Nvrtc.Check(Nvrtc.nvrtcDestroyProgram(ref program));
        }
        Assert.That(cubin.Length, Is.GreaterThan(0));

        const int n = 1000;
        nint module;
        fixed (byte* image = cubin) CudaDriver.Check(CudaDriver.cuModuleLoadData(out module, image));
        CudaDriver.Check(CudaDriver.cuMemAlloc(out ulong d, n * sizeof(float)));
        CudaDriver.Check(CudaDriver.cuEventCreate(out nint start, CudaDriver.EventDefault));
        CudaDriver.Check(CudaDriver.cuEventCreate(out nint stop, CudaDriver.EventDefault));
        try
        {
            CudaDriver.Check(CudaDriver.cuModuleGetFunction(out nint function, module, "add_one"));
            CudaDriver.Check(CudaDriver.cuFuncSetAttribute(function, CuFunctionAttribute.MaxDynamicSharedSizeBytes, 0));
            var host = Enumerable.Range(0, n).Select(i => (float)i).ToArray();
            fixed (float* h = host) CudaDriver.Check(CudaDriver.cuMemcpyHtoD(d, h, n * sizeof(float)));

            ulong arg0 = d;
            int arg1 = n;
            void** args = stackalloc void*[] { &arg0, &arg1 };
            CudaDriver.Check(CudaDriver.cuEventRecord(start, 0));
            CudaDriver.Check(CudaDriver.cuLaunchKernel(function, (n + 255) / 256, 1, 1, 256, 1, 1, 0, 0, args, null));
            CudaDriver.Check(CudaDriver.cuEventRecord(stop, 0));
            CudaDriver.Check(CudaDriver.cuEventSynchronize(stop));
            CudaDriver.Check(CudaDriver.cuEventElapsedTime(out float ms, start, stop));
            CudaDriver.Check(CudaDriver.cuCtxSynchronize());
            Assert.That(ms, Is.GreaterThanOrEqualTo(0f));

            var back = new float[n];
            fixed (float* b = back) CudaDriver.Check(CudaDriver.cuMemcpyDtoH(b, d, n * sizeof(float)));
            Assert.That(back, Is.EqualTo(host.Select(x => x + 1f).ToArray()));
        }
        finally
        {
            CudaDriver.Check(CudaDriver.cuEventDestroy(start));
            CudaDriver.Check(CudaDriver.cuEventDestroy(stop));
            CudaDriver.Check(CudaDriver.cuMemFree(d));
            CudaDriver.Check(CudaDriver.cuModuleUnload(module));
        }
    }

    [Test]
    public void Nvrtc_CompileError_ComesBackWithTheLog()
    {
        Nvrtc.Check(Nvrtc.nvrtcCreateProgram(out nint program, "extern \"C\" __global__ void k() { undeclared(); }", "bad.cu", 0, null, null));
        try
        {
            Assert.That(Nvrtc.Compile(program, []), Is.EqualTo(NvrtcResult.ErrorCompilation));
            Assert.That(Nvrtc.GetLog(program), Does.Contain("undeclared"));
        }
        finally
        {
            Nvrtc.Check(Nvrtc.nvrtcDestroyProgram(ref program));
        }
    }

    [Test]
    public void Cublas_GemmEx_And_CublasLt_BiasEpilogue_MatchANaiveProduct()
    {
        // Column-major: A is m x k, B is k x n, C is m x n.
        const int m = 3, n = 2, k = 4;
        var a = Enumerable.Range(0, m * k).Select(i => (float)(i % 5) - 2f).ToArray();
        var b = Enumerable.Range(0, k * n).Select(i => (float)(i % 3) + 0.5f).ToArray();
        var bias = new[] { 10f, 20f, 30f };
        var expected = new float[m * n];
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++)
            {
                float s = 0;
                for (int p = 0; p < k; p++) s += a[i + p * m] * b[p + j * k];
                expected[i + j * m] = s;
            }

        ulong dA = Upload(a), dB = Upload(b), dC = Upload(new float[m * n]), dBias = Upload(bias);
        float alpha = 1f, beta = 0f;
        try
        {
            Cublas.Check(Cublas.cublasCreate(out nint blas));
            try
            {
                Cublas.Check(Cublas.cublasSetStream(blas, 0));
                Cublas.Check(Cublas.cublasSetMathMode(blas, CublasMath.Default));
                Cublas.Check(Cublas.cublasGemmEx(blas, CublasOperation.N, CublasOperation.N, m, n, k, &alpha,
                    dA, CudaDataType.R32F, m, dB, CudaDataType.R32F, k, &beta, dC, CudaDataType.R32F, m,
                    CublasComputeType.Compute32F, CublasGemmAlgo.Default));
                Assert.That(Download(dC, m * n), Is.EqualTo(expected).Within(1e-5f));
            }
            finally { Cublas.Check(Cublas.cublasDestroy(blas)); }

            CublasLt.Check(CublasLt.cublasLtCreate(out nint lt));
            CublasLt.Check(CublasLt.cublasLtMatmulDescCreate(out nint desc, CublasComputeType.Compute32F, CudaDataType.R32F));
            CublasLt.Check(CublasLt.cublasLtMatrixLayoutCreate(out nint la, CudaDataType.R32F, m, k, m));
            CublasLt.Check(CublasLt.cublasLtMatrixLayoutCreate(out nint lb, CudaDataType.R32F, k, n, k));
            CublasLt.Check(CublasLt.cublasLtMatrixLayoutCreate(out nint lc, CudaDataType.R32F, m, n, m));
            CublasLt.Check(CublasLt.cublasLtMatmulPreferenceCreate(out nint pref));
            try
            {
                CublasLt.SetAttribute(desc, CublasLtMatmulDescAttribute.TransA, (int)CublasOperation.N);
                CublasLt.SetAttribute(desc, CublasLtMatmulDescAttribute.TransB, (int)CublasOperation.N);
                CublasLt.SetAttribute(desc, CublasLtMatmulDescAttribute.Epilogue, (uint)CublasLtEpilogue.Bias);
                CublasLt.SetAttribute(desc, CublasLtMatmulDescAttribute.BiasPointer, dBias);
                CublasLt.SetAttribute(pref, CublasLtMatmulPreferenceAttribute.MaxWorkspaceBytes, 0UL);
                CublasLtMatmulHeuristicResult result;
                CublasLt.Check(CublasLt.cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, lc, lc, pref, 1, &result, out int found));
                Assert.That(found, Is.EqualTo(1));
                CublasLt.Check(CublasLt.cublasLtMatmul(lt, desc, &alpha, dA, la, dB, lb, &beta, dC, lc, dC, lc, &result.Algo, 0, 0, 0));
                CudaDriver.Check(CudaDriver.cuCtxSynchronize());
                var withBias = expected.Select((x, i) => x + bias[i % m]).ToArray();
                Assert.That(Download(dC, m * n), Is.EqualTo(withBias).Within(1e-5f));
            }
            finally
            {
                CublasLt.Check(CublasLt.cublasLtMatmulPreferenceDestroy(pref));
                CublasLt.Check(CublasLt.cublasLtMatrixLayoutDestroy(lc));
                CublasLt.Check(CublasLt.cublasLtMatrixLayoutDestroy(lb));
                CublasLt.Check(CublasLt.cublasLtMatrixLayoutDestroy(la));
                CublasLt.Check(CublasLt.cublasLtMatmulDescDestroy(desc));
                CublasLt.Check(CublasLt.cublasLtDestroy(lt));
            }
        }
        finally
        {
            foreach (ulong p in new[] { dA, dB, dC, dBias }) CudaDriver.Check(CudaDriver.cuMemFree(p));
        }
    }

    private static ulong Upload(float[] data)
    {
        CudaDriver.Check(CudaDriver.cuMemAlloc(out ulong d, (nuint)(data.Length * sizeof(float))));
        fixed (float* p = data) CudaDriver.Check(CudaDriver.cuMemcpyHtoD(d, p, (nuint)(data.Length * sizeof(float))));
        return d;
    }

    private static float[] Download(ulong d, int count)
    {
        var data = new float[count];
        fixed (float* p = data) CudaDriver.Check(CudaDriver.cuMemcpyDtoH(p, d, (nuint)(count * sizeof(float))));
        return data;
    }
}
