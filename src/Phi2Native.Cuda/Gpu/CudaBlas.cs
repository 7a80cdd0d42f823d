using Phi2Native.Cuda.Native;
using Phi2Native.Cuda.Profiling;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Cuda.Gpu;

/// <summary>
/// <see cref="IBlas"/> on a GPU: one cuBLAS handle for the GEMMs and one cuBLASLt handle for LtMatmul, both made
/// in the CUDA context current when it is created (the owning device's), with a cuBLASLt workspace allocated
/// through that device.
/// </summary>
/// <remarks>
/// <para>
/// Numerics: every product uses CUBLAS_COMPUTE_32F with fp32 alpha and beta. The cuBLAS handle's math mode is
/// CUBLAS_DEFAULT_MATH, under which BF16/F16 products run on tensor cores (fp32 accumulate) and F32 products run
/// in full fp32 - never TF32, which only CUBLAS_TF32_TENSOR_OP_MATH or CUBLAS_COMPUTE_32F_FAST_TF32 enable - so
/// F32 results hold a tight tolerance. CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION is added, and cuBLASLt's
/// heuristic is asked for split-K reductions in fp32 only, so a BF16/F16 output is rounded once, as the emulator
/// and the CPU backend round it.
/// </para>
/// <para>
/// LtMatmul keeps its descriptors, layouts and chosen algorithm per <see cref="CudaBlasLtPlanKey"/> (shape, types,
/// epilogue, strides, pointer alignments), as the cuBLAS documentation advises ("query the heuristics once ...
/// and then reuse the result"). Calls are serialized by a lock: cublasSetStream changes the shared handle, and
/// a cached descriptor's bias and aux pointers are set per call.
/// </para>
/// </remarks>
internal sealed unsafe class CudaBlas : IBlas, IDisposable
{
    /// <inheritdoc/>
    /// <remarks>Starts false: unknown until CudaBackend.OpenGpu's probe has compared cuBLASLt's GELU with gelu_new.</remarks>
    public bool GeluEpilogueIsGeluNew { get; set; } = false;

    /// <inheritdoc/>
    /// <remarks>Starts false: unknown until CudaBackend.OpenGpu's probe has compared cuBLASLt's DGELU with gelu_new's derivative.</remarks>
    public bool DGeluEpilogueIsGeluNew { get; set; } = false;

    /// <summary>cuBLASLt's workspace: 32 MiB, what the cuBLAS documentation recommends for Hopper.</summary>
    public const long WorkspaceBytes = 32L << 20;

    // Shapes vary with sequence length; past this many plans the cache is emptied instead of growing forever.
    private const int MaxPlans = 1024;

    private readonly IDeviceApi _device;
    private readonly object _gate = new();
    private readonly Dictionary<CudaBlasLtPlanKey, CudaBlasLtPlan> _plans = [];
    private nint _cublas, _cublasLt;
    private DevicePtr _workspace;
    private bool _disposed;

    /// <summary>
    /// Creates the handles and the workspace. <paramref name="device"/> owns the CUDA context, which must be current
    /// on the calling thread; cuBLAS works through the CUDA runtime, which uses the current context.
    /// </summary>
    public CudaBlas(IDeviceApi device)
    {
        ArgumentNullException.ThrowIfNull(device);
        _device = device;
        try
        {
            Cublas.Check(Cublas.cublasCreate(out _cublas));
            Cublas.Check(Cublas.cublasSetMathMode(_cublas, CublasMath.Default | CublasMath.DisallowReducedPrecisionReduction));
            CublasLt.Check(CublasLt.cublasLtCreate(out _cublasLt));
            _workspace = device.Allocate(WorkspaceBytes);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <inheritdoc />
    public void GemmEx(BlasOperation transposeA, BlasOperation transposeB, int m, int n, int k,
        float alpha, DevicePtr a, DType aType, int lda, DevicePtr b, DType bType, int ldb,
        float beta, DevicePtr c, DType cType, int ldc, DeviceStream stream)
    {
        BlasArguments.Gemm(nameof(GemmEx), transposeA, transposeB, m, n, k, a, aType, lda, 0, b, bType, ldb, 0, c, cType, ldc, 0, 1);
        lock (_gate)
        {
            Enter();
            Cublas.Check(Cublas.cublasSetStream(_cublas, stream.Handle));
            using var timing = Record(nameof(GemmEx), m, n, k, 1, aType, cType, beta != 0, alpha != 0, stream);
            Cublas.Check(Cublas.cublasGemmEx(_cublas, (CublasOperation)transposeA, (CublasOperation)transposeB, m, n, k, &alpha,
                a.Address, ToCublas(aType), lda, b.Address, ToCublas(bType), ldb, &beta,
                c.Address, ToCublas(cType), ldc, CublasComputeType.Compute32F, CublasGemmAlgo.Default));
        }
    }

    /// <inheritdoc />
    public void GemmStridedBatchedEx(BlasOperation transposeA, BlasOperation transposeB, int m, int n, int k,
        float alpha, DevicePtr a, DType aType, int lda, long strideA, DevicePtr b, DType bType, int ldb, long strideB,
        float beta, DevicePtr c, DType cType, int ldc, long strideC, int batchCount, DeviceStream stream)
    {
        BlasArguments.Gemm(nameof(GemmStridedBatchedEx), transposeA, transposeB, m, n, k,
            a, aType, lda, strideA, b, bType, ldb, strideB, c, cType, ldc, strideC, batchCount);
        lock (_gate)
        {
            Enter();
            Cublas.Check(Cublas.cublasSetStream(_cublas, stream.Handle));
            using var timing = Record(nameof(GemmStridedBatchedEx), m, n, k, batchCount, aType, cType, beta != 0, alpha != 0, stream);
            Cublas.Check(Cublas.cublasGemmStridedBatchedEx(_cublas, (CublasOperation)transposeA, (CublasOperation)transposeB, m, n, k, &alpha,
                a.Address, ToCublas(aType), lda, strideA, b.Address, ToCublas(bType), ldb, strideB, &beta,
                c.Address, ToCublas(cType), ldc, strideC, batchCount, CublasComputeType.Compute32F, CublasGemmAlgo.Default));
        }
    }

    /// <inheritdoc />
    public void LtMatmul(LtMatmulArguments arguments, DeviceStream stream)
    {
        BlasArguments.LtMatmul(arguments);
        // cuBLASLt describes C even when beta is 0; D stands in for a missing C (same type and shape, never read).
        var x = arguments.C.IsNull ? arguments with { C = arguments.D, Ldc = arguments.Ldd, StrideC = arguments.StrideD } : arguments;
        var key = CudaBlasLtPlanKey.Of(x);
        lock (_gate)
        {
            Enter();
            if (!_plans.TryGetValue(key, out var plan))
            {
                if (_plans.Count >= MaxPlans) ClearPlans();
                plan = CudaBlasLtPlan.Create(_cublasLt, x, key, WorkspaceBytes);
                _plans.Add(key, plan);
            }
            using var timing = ProfileRecorder.Current is null ? default : new GemmTiming(this, "cublasLtMatmul",
                SeamRecording.GemmDetail(x.M, x.N, x.K, x.BatchCount, x.AType, x.DType, x.Beta != 0, x.Epilogue.ToString()), BlasCost.LtMatmul(arguments), stream);
            plan.Run(_cublasLt, x, _workspace, WorkspaceBytes, stream);
        }
    }

    /// <summary>Destroys the plans and handles and frees the workspace; the owning device calls this before it goes.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            ClearPlans();
            if (_cublasLt != 0) CublasLt.cublasLtDestroy(_cublasLt);
            if (_cublas != 0) Cublas.cublasDestroy(_cublas);
            _cublasLt = _cublas = 0;
            if (!_workspace.IsNull) _device.Free(_workspace);
            _workspace = DevicePtr.Null;
        }
    }

    /// <summary>The cudaDataType_t of an element type the products support.</summary>
    internal static CudaDataType ToCublas(DType type) => type switch
    {
        DType.F32 => CudaDataType.R32F,
        DType.F16 => CudaDataType.R16F,
        DType.BF16 => CudaDataType.R16BF,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "no cuBLAS matrix type (BlasArguments refuses it)"),
    };

    /// <summary>The cublasLtEpilogue_t of an epilogue.</summary>
    internal static CublasLtEpilogue ToCublas(LtEpilogue epilogue) => epilogue switch
    {
        LtEpilogue.Default => CublasLtEpilogue.Default,
        LtEpilogue.Bias => CublasLtEpilogue.Bias,
        LtEpilogue.GeluAuxBias => CublasLtEpilogue.GeluAuxBias,
        LtEpilogue.GeluBias => CublasLtEpilogue.GeluBias,
        LtEpilogue.DGelu => CublasLtEpilogue.DGelu,
        LtEpilogue.BGradB => CublasLtEpilogue.BGradB,
        _ => throw new ArgumentOutOfRangeException(nameof(epilogue), epilogue, "not an epilogue (BlasArguments refuses it)"),
    };

    private GemmTiming Record(string call, int m, int n, int k, int batch, DType inputs, DType output, bool readsC, bool readsInputs, DeviceStream stream) =>
        ProfileRecorder.Current is null ? default : new GemmTiming(this, "cublas" + call,
            SeamRecording.GemmDetail(m, n, k, batch, inputs, output, readsC), BlasCost.Gemm(m, n, k, batch, inputs, output, readsC, readsInputs), stream);

    // While a recorder is open: an event before the GEMM, and at the end of the using block the one after and the record.
    private readonly struct GemmTiming : IDisposable
    {
        private readonly CudaBlas? _blas;
        private readonly string _name = "", _detail = "";
        private readonly KernelCost _cost;
        private readonly DeviceStream _stream;
        private readonly DeviceEvent? _start;

        public GemmTiming(CudaBlas blas, string name, string detail, KernelCost cost, DeviceStream stream)
        {
            (_blas, _name, _detail, _cost, _stream) = (blas, name, detail, cost, stream);
            _start = SeamRecording.Begin(blas._device, stream);
        }

        public void Dispose()
        {
            if (_blas is null || ProfileRecorder.Current is not { } recorder) return;
            recorder.Launch(ProfileEventKind.Blas, _name, _detail, _cost, SeamRecording.End(_blas._device, _stream, _start));
        }
    }

    private void ClearPlans()
    {
        foreach (var plan in _plans.Values) plan.Dispose();
        _plans.Clear();
    }

    // cuBLAS runs in whichever context is current on the calling thread; a thread that never set one would get
    // device 0's, so the owning device's context is made current before every call.
    private void Enter()
    {
        ThrowIfDisposed();
        (_device as CudaDevice)?.MakeCurrent();
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);
}
