using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using NUnit.Framework;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Native;

namespace Phi2Native.Tests.Cuda;

/// <summary>
/// Pins enum values and struct layouts to the CUDA 12/13 headers (cuda.h, nvrtc.h, cublas_api.h,
/// cublasLt.h, library_types.h), so a typo in a binding fails here instead of on a GPU.
/// </summary>
[TestFixture]
public class BindingLayoutTests
{
    [Test]
    public void CuResult_MatchesCudaH()
    {
        Assert.That((int)CuResult.Success, Is.EqualTo(0));
        Assert.That((int)CuResult.ErrorInvalidValue, Is.EqualTo(1));
        Assert.That((int)CuResult.ErrorOutOfMemory, Is.EqualTo(2));
        Assert.That((int)CuResult.ErrorNotInitialized, Is.EqualTo(3));
        Assert.That((int)CuResult.ErrorNoDevice, Is.EqualTo(100));
        Assert.That((int)CuResult.ErrorInvalidPtx, Is.EqualTo(218));
        Assert.That((int)CuResult.ErrorNotFound, Is.EqualTo(500));
        Assert.That((int)CuResult.ErrorNotReady, Is.EqualTo(600));
        Assert.That((int)CuResult.ErrorIllegalAddress, Is.EqualTo(700));
        Assert.That((int)CuResult.ErrorLaunchFailed, Is.EqualTo(719));
        Assert.That((int)CuResult.ErrorUnknown, Is.EqualTo(999));
    }

    [Test]
    public void DriverAttributes_MatchCudaH()
    {
        Assert.That((int)CuDeviceAttribute.ComputeCapabilityMajor, Is.EqualTo(75));
        Assert.That((int)CuDeviceAttribute.ComputeCapabilityMinor, Is.EqualTo(76));
        Assert.That((int)CuDeviceAttribute.MultiprocessorCount, Is.EqualTo(16));
        Assert.That((int)CuDeviceAttribute.MaxSharedMemoryPerBlockOptin, Is.EqualTo(97));
        Assert.That((int)CuFunctionAttribute.MaxDynamicSharedSizeBytes, Is.EqualTo(8));
        Assert.That(CudaDriver.StreamNonBlocking, Is.EqualTo(1u));
        Assert.That(CudaDriver.EventDefault, Is.EqualTo(0u));
        Assert.That(CudaDriver.EventDisableTiming, Is.EqualTo(2u));
    }

    [Test]
    public void NvrtcResult_MatchesNvrtcH()
    {
        Assert.That((int)NvrtcResult.ErrorOutOfMemory, Is.EqualTo(1));
        Assert.That((int)NvrtcResult.ErrorInvalidOption, Is.EqualTo(5));
        Assert.That((int)NvrtcResult.ErrorCompilation, Is.EqualTo(6));
        Assert.That((int)NvrtcResult.ErrorBuiltinOperationFailure, Is.EqualTo(7));
        Assert.That((int)NvrtcResult.ErrorInternalError, Is.EqualTo(11));
    }

    [Test]
    public void CublasEnums_MatchCublasApiH()
    {
        Assert.That((int)CublasStatus.NotInitialized, Is.EqualTo(1));
        Assert.That((int)CublasStatus.AllocFailed, Is.EqualTo(3));
        Assert.That((int)CublasStatus.InvalidValue, Is.EqualTo(7));
        Assert.That((int)CublasStatus.ExecutionFailed, Is.EqualTo(13));
        Assert.That((int)CublasStatus.NotSupported, Is.EqualTo(15));
        Assert.That((int)CublasOperation.T, Is.EqualTo(1));
        Assert.That((int)CudaDataType.R16F, Is.EqualTo(2));
        Assert.That((int)CudaDataType.R16BF, Is.EqualTo(14));
        Assert.That((int)CublasComputeType.Compute32F, Is.EqualTo(68));
        Assert.That((int)CublasComputeType.Compute32FFastTF32, Is.EqualTo(77));
        Assert.That((int)CublasGemmAlgo.Default, Is.EqualTo(-1));
        Assert.That((int)CublasMath.DisallowReducedPrecisionReduction, Is.EqualTo(16));
    }

    [Test]
    public void CublasLtEnums_MatchCublasLtH()
    {
        Assert.That((int)CublasLtEpilogue.Default, Is.EqualTo(1));
        Assert.That((int)CublasLtEpilogue.Bias, Is.EqualTo(4));
        Assert.That((int)CublasLtEpilogue.GeluAuxBias, Is.EqualTo(164));
        Assert.That((int)CublasLtEpilogue.DGelu, Is.EqualTo(192));
        Assert.That((int)CublasLtEpilogue.DGeluBGrad, Is.EqualTo(208));
        Assert.That((int)CublasLtEpilogue.BGradB, Is.EqualTo(512));
        Assert.That((int)CublasLtMatmulDescAttribute.TransA, Is.EqualTo(3));
        Assert.That((int)CublasLtMatmulDescAttribute.TransB, Is.EqualTo(4));
        Assert.That((int)CublasLtMatmulDescAttribute.Epilogue, Is.EqualTo(7));
        Assert.That((int)CublasLtMatmulDescAttribute.BiasPointer, Is.EqualTo(8));
        Assert.That((int)CublasLtMatmulDescAttribute.EpilogueAuxPointer, Is.EqualTo(11));
        Assert.That((int)CublasLtMatmulDescAttribute.EpilogueAuxLd, Is.EqualTo(12));
        Assert.That((int)CublasLtMatmulPreferenceAttribute.MaxWorkspaceBytes, Is.EqualTo(1));
        Assert.That((int)CublasLtMatrixLayoutAttribute.BatchCount, Is.EqualTo(5));
        Assert.That((int)CublasLtMatrixLayoutAttribute.StridedBatchOffset, Is.EqualTo(6));
        Assert.That((int)CublasLtMatmulDescAttribute.BiasBatchStride, Is.EqualTo(10));
        Assert.That((int)CublasLtMatmulDescAttribute.EpilogueAuxBatchStride, Is.EqualTo(13));
        Assert.That((int)CublasLtMatmulDescAttribute.BiasDataType, Is.EqualTo(26));
        Assert.That((int)CublasLtMatmulPreferenceAttribute.ReductionSchemeMask, Is.EqualTo(3));
        Assert.That((int)CublasLtMatmulPreferenceAttribute.MinAlignmentABytes, Is.EqualTo(5));
        Assert.That((int)CublasLtMatmulPreferenceAttribute.MinAlignmentDBytes, Is.EqualTo(8));
        Assert.That((int)CublasLtReductionScheme.ComputeType, Is.EqualTo(2));
        Assert.That((int)CublasLtReductionScheme.Mask, Is.EqualTo(7));
    }

    [Test]
    public void EnumsPassedByValue_AreFourBytes()
    {
        // C enums are int-sized in the x86-64 and aarch64 ABIs; a wider or narrower backing type would shift arguments.
        foreach (var t in new[] { typeof(CuResult), typeof(CuDeviceAttribute), typeof(CuFunctionAttribute), typeof(NvrtcResult),
                     typeof(CublasStatus), typeof(CublasOperation), typeof(CudaDataType), typeof(CublasComputeType), typeof(CublasMath),
                     typeof(CublasGemmAlgo), typeof(CublasLtEpilogue), typeof(CublasLtMatmulDescAttribute),
                     typeof(CublasLtMatrixLayoutAttribute), typeof(CublasLtMatmulPreferenceAttribute), typeof(CublasLtReductionScheme),
                     typeof(BlasOperation) })
            Assert.That(Enum.GetUnderlyingType(t), Is.EqualTo(typeof(int)), t.Name);
    }

    [Test]
    public void HeuristicResult_HasTheCLayout()
    {
        Assert.That(Unsafe.SizeOf<CublasLtMatmulAlgo>(), Is.EqualTo(64));
        Assert.That(Unsafe.SizeOf<CublasLtMatmulHeuristicResult>(), Is.EqualTo(96));
        Assert.That(Marshal.SizeOf<CublasLtMatmulHeuristicResult>(), Is.EqualTo(96));
        Assert.That(Marshal.OffsetOf<CublasLtMatmulHeuristicResult>(nameof(CublasLtMatmulHeuristicResult.WorkspaceSize)).ToInt32(), Is.EqualTo(64));
        Assert.That(Marshal.OffsetOf<CublasLtMatmulHeuristicResult>(nameof(CublasLtMatmulHeuristicResult.State)).ToInt32(), Is.EqualTo(72));
        Assert.That(Marshal.OffsetOf<CublasLtMatmulHeuristicResult>(nameof(CublasLtMatmulHeuristicResult.WavesCount)).ToInt32(), Is.EqualTo(76));
        Assert.That(Marshal.OffsetOf<CublasLtMatmulHeuristicResult>(nameof(CublasLtMatmulHeuristicResult.Reserved)).ToInt32(), Is.EqualTo(80));
        Assert.That(RuntimeHelpers.IsReferenceOrContainsReferences<CublasLtMatmulHeuristicResult>(), Is.False, "must stay blittable");
    }
}
