using Phi2Native.Cuda.Native;
using Phi2Native.Tensors;

namespace Phi2Native.Cuda.Gpu;

/// <summary>
/// What makes two cublasLtMatmul calls share descriptors and an algorithm: everything but the pointers' values,
/// and of those only their alignment (the heuristic picks algorithms by the alignment it is promised).
/// </summary>
internal readonly record struct CudaBlasLtPlanKey(
    BlasOperation TransposeA, BlasOperation TransposeB, int M, int N, int K, DType InputType, DType OutputType,
    long Lda, long Ldb, long Ldc, long Ldd, int BatchCount, long StrideA, long StrideB, long StrideC, long StrideD,
    LtEpilogue Epilogue, long BiasBatchStride, long AuxLd, long AuxBatchStride,
    int AlignmentA, int AlignmentB, int AlignmentC, int AlignmentD, int AlignmentBias, int AlignmentAux)
{
    /// <summary>The key of a call whose C is given (see <see cref="CudaBlas"/>, which substitutes D for a null C).</summary>
    public static CudaBlasLtPlanKey Of(LtMatmulArguments x) => new(
        x.TransposeA, x.TransposeB, x.M, x.N, x.K, x.AType, x.DType,
        x.Lda, x.Ldb, x.Ldc, x.Ldd, x.BatchCount, x.StrideA, x.StrideB, x.StrideC, x.StrideD,
        x.Epilogue, x.BiasBatchStride, x.AuxLd, x.AuxBatchStride,
        Alignment(x.A), Alignment(x.B), Alignment(x.C), Alignment(x.D), Alignment(x.Bias), Alignment(x.Aux));

    /// <summary>The largest power of two up to 256 that divides the address (256 for null): what cuBLASLt may assume.</summary>
    public static int Alignment(DevicePtr pointer) =>
        pointer.IsNull ? 256 : (int)Math.Min(256UL, pointer.Address & (~pointer.Address + 1));
}

/// <summary>
/// The cuBLASLt objects for one <see cref="CudaBlasLtPlanKey"/>: a matmul descriptor (compute fp32, scale fp32,
/// transposes, epilogue and its types and strides), four matrix layouts, and the algorithm the heuristic chose.
/// The bias and aux pointers change per call and are set on the descriptor before each use.
/// </summary>
internal sealed unsafe class CudaBlasLtPlan : IDisposable
{
    private nint _description, _layoutA, _layoutB, _layoutC, _layoutD;
    private CublasLtMatmulAlgo _algorithm;

    private CudaBlasLtPlan() { }

    /// <summary>
    /// Creates the descriptors for <paramref name="x"/> (C not null) and asks the heuristic for its best algorithm
    /// within <paramref name="maxWorkspaceBytes"/>, promising the pointers' alignments from <paramref name="key"/>.
    /// </summary>
    public static CudaBlasLtPlan Create(nint handle, LtMatmulArguments x, CudaBlasLtPlanKey key, ulong maxWorkspaceBytes)
    {
        var plan = new CudaBlasLtPlan();
        try
        {
            CublasLt.Check(CublasLt.cublasLtMatmulDescCreate(out plan._description, CublasComputeType.Compute32F, CudaDataType.R32F));
            nint d = plan._description;
            CublasLt.SetAttribute(d, CublasLtMatmulDescAttribute.TransA, (int)x.TransposeA);
            CublasLt.SetAttribute(d, CublasLtMatmulDescAttribute.TransB, (int)x.TransposeB);
            CublasLt.SetAttribute(d, CublasLtMatmulDescAttribute.Epilogue, (uint)CudaBlas.ToCublas(x.Epilogue));
            if (!x.Bias.IsNull)
            {
                CublasLt.SetAttribute(d, CublasLtMatmulDescAttribute.BiasDataType, (int)CudaBlas.ToCublas(x.BiasType));
                if (x.BatchCount > 1) CublasLt.SetAttribute(d, CublasLtMatmulDescAttribute.BiasBatchStride, x.BiasBatchStride);
            }
            if (!x.Aux.IsNull)
            {
                CublasLt.SetAttribute(d, CublasLtMatmulDescAttribute.EpilogueAuxLd, x.AuxLd);
                if (x.BatchCount > 1) CublasLt.SetAttribute(d, CublasLtMatmulDescAttribute.EpilogueAuxBatchStride, x.AuxBatchStride);
            }
            plan.SetPointers(x);

            // Layouts describe matrices as stored: a transposed A is k x m in memory.
            bool transposedA = x.TransposeA == BlasOperation.Transpose, transposedB = x.TransposeB == BlasOperation.Transpose;
            plan._layoutA = Layout(x.AType, transposedA ? x.K : x.M, transposedA ? x.M : x.K, x.Lda, x.BatchCount, x.StrideA);
            plan._layoutB = Layout(x.BType, transposedB ? x.N : x.K, transposedB ? x.K : x.N, x.Ldb, x.BatchCount, x.StrideB);
            plan._layoutD = Layout(x.DType, x.M, x.N, x.Ldd, x.BatchCount, x.StrideD);
            // cuBLASLt's in-place form is "C == D and Cdesc == Ddesc": where C's layout equals D's, share the handle.
            plan._layoutC = x.Ldc == x.Ldd && x.StrideC == x.StrideD
                ? plan._layoutD
                : Layout(x.DType, x.M, x.N, x.Ldc, x.BatchCount, x.StrideC);

            // A split-K reduction in the output type rounds partial sums to BF16/F16; keep sums in fp32 (as the
            // emulator and the CPU backend do) unless no such algorithm exists.
            var precise = x.DType == DType.F32 ? CublasLtReductionScheme.Mask : CublasLtReductionScheme.ComputeType;
            if (!plan.TryChooseAlgorithm(handle, key, maxWorkspaceBytes, precise) &&
                !plan.TryChooseAlgorithm(handle, key, maxWorkspaceBytes, CublasLtReductionScheme.Mask))
                throw new CudaException(CudaException.CublasLtLibrary, "cublasLtMatmulAlgoGetHeuristic", (int)CublasStatus.NotSupported,
                    "CUBLAS_STATUS_NOT_SUPPORTED", "no algorithm for this matmul", $"the problem: {key}");
            return plan;
        }
        catch
        {
            plan.Dispose();
            throw;
        }
    }

    /// <summary>Runs the planned matmul on <paramref name="stream"/> with <paramref name="x"/>'s pointers and scalars.</summary>
    public void Run(nint handle, LtMatmulArguments x, DevicePtr workspace, ulong workspaceBytes, DeviceStream stream)
    {
        SetPointers(x);
        float alpha = x.Alpha, beta = x.Beta;
        CublasLtMatmulAlgo algorithm = _algorithm;
        CublasLt.Check(CublasLt.cublasLtMatmul(handle, _description, &alpha,
            x.A.Address, _layoutA, x.B.Address, _layoutB, &beta,
            x.C.Address, _layoutC, x.D.Address, _layoutD,
            &algorithm, workspace.Address, (nuint)workspaceBytes, stream.Handle));
    }

    /// <summary>Destroys the descriptors (statuses ignored: there is nothing to do about a failure here).</summary>
    public void Dispose()
    {
        if (_description != 0) CublasLt.cublasLtMatmulDescDestroy(_description);
        foreach (nint layout in (ReadOnlySpan<nint>)[_layoutA, _layoutB, _layoutC == _layoutD ? 0 : _layoutC, _layoutD])
            if (layout != 0) CublasLt.cublasLtMatrixLayoutDestroy(layout);
        _description = _layoutA = _layoutB = _layoutC = _layoutD = 0;
    }

    private void SetPointers(LtMatmulArguments x)
    {
        if (!x.Bias.IsNull) CublasLt.SetAttribute(_description, CublasLtMatmulDescAttribute.BiasPointer, x.Bias.Address);
        if (!x.Aux.IsNull) CublasLt.SetAttribute(_description, CublasLtMatmulDescAttribute.EpilogueAuxPointer, x.Aux.Address);
    }

    private bool TryChooseAlgorithm(nint handle, CudaBlasLtPlanKey key, ulong maxWorkspaceBytes, CublasLtReductionScheme schemes)
    {
        CublasLt.Check(CublasLt.cublasLtMatmulPreferenceCreate(out nint preference));
        try
        {
            CublasLt.SetAttribute(preference, CublasLtMatmulPreferenceAttribute.MaxWorkspaceBytes, maxWorkspaceBytes);
            CublasLt.SetAttribute(preference, CublasLtMatmulPreferenceAttribute.ReductionSchemeMask, (uint)schemes);
            CublasLt.SetAttribute(preference, CublasLtMatmulPreferenceAttribute.MinAlignmentABytes, (uint)key.AlignmentA);
            CublasLt.SetAttribute(preference, CublasLtMatmulPreferenceAttribute.MinAlignmentBBytes, (uint)key.AlignmentB);
            CublasLt.SetAttribute(preference, CublasLtMatmulPreferenceAttribute.MinAlignmentCBytes, (uint)key.AlignmentC);
            CublasLt.SetAttribute(preference, CublasLtMatmulPreferenceAttribute.MinAlignmentDBytes, (uint)key.AlignmentD);
            CublasLtMatmulHeuristicResult result;
            var status = CublasLt.cublasLtMatmulAlgoGetHeuristic(handle, _description, _layoutA, _layoutB, _layoutC, _layoutD,
                preference, 1, &result, out int found);
            // NOT_SUPPORTED: "no heuristic function available for current configuration", i.e. no algorithm.
            if (status == CublasStatus.NotSupported) return false;
            CublasLt.Check(status, "cublasLtMatmulAlgoGetHeuristic");
            if (found < 1 || result.State != CublasStatus.Success) return false;
            _algorithm = result.Algo;
            return true;
        }
        finally
        {
            CublasLt.cublasLtMatmulPreferenceDestroy(preference);
        }
    }

    private static nint Layout(DType type, long rows, long columns, long ld, int batchCount, long stride)
    {
        CublasLt.Check(CublasLt.cublasLtMatrixLayoutCreate(out nint layout, CudaBlas.ToCublas(type), (ulong)rows, (ulong)columns, ld));
        try
        {
            if (batchCount > 1)
            {
                CublasLt.SetAttribute(layout, CublasLtMatrixLayoutAttribute.BatchCount, batchCount);
                CublasLt.SetAttribute(layout, CublasLtMatrixLayoutAttribute.StridedBatchOffset, stride);
            }
            return layout;
        }
        catch
        {
            CublasLt.cublasLtMatrixLayoutDestroy(layout);
            throw;
        }
    }
}
