using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Cuda.Profiling;

/// <summary>
/// The declared cost of a GEMM, from its arguments: 2 m n k flops per batch entry (a multiply-add is 2), on tensor
/// cores when the inputs are BF16 or F16 and as SIMT fp32 when they are F32 (the engine asks cuBLAS for
/// CUBLAS_DEFAULT_MATH, never TF32: see <see cref="Gpu.CudaBlas"/>); bytes are A and B read once, C read when beta is
/// not 0, D written, plus the epilogue's bias and aux.
/// </summary>
internal static class BlasCost
{
    /// <summary>The cost of one cublasGemmEx / cublasGemmStridedBatchedEx call.</summary>
    public static KernelCost Gemm(int m, int n, int k, int batchCount, DType inputType, DType outputType, bool readsC, bool readsInputs = true)
    {
        long batch = Math.Max(batchCount, 1);
        int a = inputType.SizeInBytes(), c = outputType.SizeInBytes();
        long read = readsInputs ? batch * ((long)m * k + (long)k * n) * a : 0;
        if (readsC) read += batch * (long)m * n * c;
        long written = batch * (long)m * n * c;
        long flops = readsInputs ? 2 * batch * m * (long)n * k : 0;
        return inputType is DType.BF16 or DType.F16 ? new(read, written, flops, 0) : new(read, written, 0, flops);
    }

    /// <summary>The cost of one cublasLtMatmul call, its epilogue's bias and aux traffic included.</summary>
    public static KernelCost LtMatmul(LtMatmulArguments arguments)
    {
        var cost = Gemm(arguments.M, arguments.N, arguments.K, arguments.BatchCount, arguments.AType, arguments.DType,
            arguments.Beta != 0, arguments.Alpha != 0);
        long batch = Math.Max(arguments.BatchCount, 1), mn = batch * arguments.M * (long)arguments.N;
        int d = arguments.DType.SizeInBytes(), bias = arguments.BiasType.SizeInBytes();
        return arguments.Epilogue switch
        {
            LtEpilogue.Bias => cost + new KernelCost(batch * arguments.M * bias, 0, 0, mn),
            LtEpilogue.GeluBias => cost + new KernelCost(batch * arguments.M * bias, 0, 0, mn * GeluFlops),
            LtEpilogue.GeluAuxBias => cost + new KernelCost(batch * arguments.M * bias, mn * d, 0, mn * GeluFlops),
            LtEpilogue.DGelu => cost + new KernelCost(mn * d, 0, 0, mn * GeluFlops),
            LtEpilogue.BGradB => cost + new KernelCost(0, batch * arguments.N * bias, 0, batch * arguments.N * (long)arguments.K),
            _ => cost,
        };
    }

    // gelu_new (tanh form) or its derivative per element, as gelu.cu counts it: about 10 flops with the tanh as one.
    private const int GeluFlops = 10;
}
