using Phi2Native.Tensors;

namespace Phi2Native.Cuda;

/// <summary>
/// One matrix (or vector) argument of an <see cref="IBlas"/> call as stored: <see cref="Rows"/> x <see cref="Columns"/>
/// column-major with leading dimension <see cref="Ld"/>, repeated every <see cref="Stride"/> elements across a batch.
/// </summary>
/// <param name="Name">The argument's name for messages, e.g. "A".</param>
/// <param name="Pointer">The first element of the first matrix.</param>
/// <param name="Type">The element type.</param>
/// <param name="Rows">Rows as stored (before any transpose).</param>
/// <param name="Columns">Columns as stored.</param>
/// <param name="Ld">Elements from one column to the next.</param>
/// <param name="Stride">Elements from one matrix of the batch to the next.</param>
internal readonly record struct BlasOperand(string Name, DevicePtr Pointer, DType Type, long Rows, long Columns, long Ld, long Stride)
{
    /// <summary>
    /// Elements from the first element of the first matrix to one past the last element of the last: the extent a
    /// kernel reads or writes, so an ld or stride too large for the buffer shows as an access past its end.
    /// 0 for an empty matrix.
    /// </summary>
    public long TouchedElements(int batchCount) =>
        Rows == 0 || Columns == 0 ? 0 : checked((Columns - 1) * Ld + Rows + (batchCount - 1) * Stride);

    /// <summary><see cref="TouchedElements"/> in bytes.</summary>
    public long TouchedBytes(int batchCount) => checked(TouchedElements(batchCount) * Type.SizeInBytes());

    /// <summary>"A (7 x 5, ld 9)" or "A (7 x 5, ld 9, stride 80, batch 3)", for messages.</summary>
    public string Describe(int batchCount) =>
        batchCount == 1 ? $"{Name} ({Rows} x {Columns} {Type}, ld {Ld})" : $"{Name} ({Rows} x {Columns} {Type}, ld {Ld}, stride {Stride}, batch {batchCount})";
}

/// <summary>
/// The argument checks cuBLAS and cuBLASLt make before they run, shared by <see cref="Emulator.EmulatedBlas"/> and
/// <see cref="Gpu.CudaBlas"/> so both refuse the same calls with the same <see cref="BlasArgumentException"/>.
/// </summary>
/// <remarks>
/// From the cuBLAS documentation: cublasGemmEx returns CUBLAS_STATUS_INVALID_VALUE "if m &lt; 0 or n &lt; 0 or
/// k &lt; 0", for a transa/transb that is not an operation, and for "lda &lt; max(1, m) if transa == CUBLAS_OP_N and
/// lda &lt; max(1, k) otherwise" (likewise ldb with k/n, and ldc &lt; max(1, m)); the type combinations are its
/// table for CUBLAS_COMPUTE_32F (A and B alike: F32 -> F32; BF16 -> BF16 or F32; F16 -> F16 or F32), which is
/// also cublasLtMatmul's "Table 1" with the bias type equal to D's. Stricter than cuBLAS, on purpose: batchCount
/// must be at least 1 (cuBLAS returns at once for 0), strides must not be negative, a pointer an epilogue does not
/// use must be null, and null operands that would be read are refused here instead of faulting on the GPU.
/// </remarks>
internal static class BlasArguments
{
    /// <summary>Checks a cublasGemmEx / cublasGemmStridedBatchedEx call and returns its three operands (A, B, C).</summary>
    public static (BlasOperand A, BlasOperand B, BlasOperand C) Gemm(string call,
        BlasOperation transposeA, BlasOperation transposeB, int m, int n, int k,
        DevicePtr a, DType aType, int lda, long strideA, DevicePtr b, DType bType, int ldb, long strideB,
        DevicePtr c, DType cType, int ldc, long strideC, int batchCount)
    {
        Operation(call, "transposeA", transposeA);
        Operation(call, "transposeB", transposeB);
        AtLeast(call, "m", m, 0);
        AtLeast(call, "n", n, 0);
        AtLeast(call, "k", k, 0);
        AtLeast(call, "batchCount", batchCount, 1);
        Types(call, aType, bType, "cType", cType);
        AtLeast(call, "strideA", strideA, 0);
        AtLeast(call, "strideB", strideB, 0);
        AtLeast(call, "strideC", strideC, 0);

        var operandA = Stored("A", a, aType, transposeA, m, k, lda, strideA);
        var operandB = Stored("B", b, bType, transposeB, k, n, ldb, strideB);
        var operandC = new BlasOperand("C", c, cType, m, n, ldc, strideC);
        LeadingDimension(call, "lda", operandA, transposeA, m, k);
        LeadingDimension(call, "ldb", operandB, transposeB, k, n);
        LeadingDimension(call, "ldc", operandC, null, m, n);
        if (m > 0 && n > 0)
        {
            if (k > 0) NotNull(call, "a", a);
            if (k > 0) NotNull(call, "b", b);
            NotNull(call, "c", c);
        }
        Addressable(call, batchCount, operandA, operandB, operandC);
        return (operandA, operandB, operandC);
    }

    /// <summary>The operands of a checked cublasLtMatmul call; those the epilogue does not use are null.</summary>
    internal readonly record struct LtOperands(BlasOperand A, BlasOperand B, BlasOperand? C, BlasOperand D, BlasOperand? Bias, BlasOperand? Aux);

    /// <summary>Checks a cublasLtMatmul call (see <see cref="LtMatmulArguments"/>) and returns its operands.</summary>
    public static LtOperands LtMatmul(LtMatmulArguments x)
    {
        ArgumentNullException.ThrowIfNull(x);
        const string call = nameof(IBlas.LtMatmul);
        Operation(call, nameof(x.TransposeA), x.TransposeA);
        Operation(call, nameof(x.TransposeB), x.TransposeB);
        AtLeast(call, nameof(x.M), x.M, 1);
        AtLeast(call, nameof(x.N), x.N, 1);
        AtLeast(call, nameof(x.K), x.K, 1);
        AtLeast(call, nameof(x.BatchCount), x.BatchCount, 1);
        Types(call, x.AType, x.BType, nameof(x.DType), x.DType);
        AtLeast(call, nameof(x.StrideA), x.StrideA, 0);
        AtLeast(call, nameof(x.StrideB), x.StrideB, 0);
        AtLeast(call, nameof(x.StrideC), x.StrideC, 0);
        AtLeast(call, nameof(x.StrideD), x.StrideD, 0);
        AtLeast(call, nameof(x.BiasBatchStride), x.BiasBatchStride, 0);
        AtLeast(call, nameof(x.AuxBatchStride), x.AuxBatchStride, 0);
        if (!Enum.IsDefined(x.Epilogue))
            throw new BlasArgumentException(call, nameof(x.Epilogue), $"Epilogue {(int)x.Epilogue} is not an LtEpilogue");

        var a = Stored(nameof(x.A), x.A, x.AType, x.TransposeA, x.M, x.K, x.Lda, x.StrideA);
        var b = Stored(nameof(x.B), x.B, x.BType, x.TransposeB, x.K, x.N, x.Ldb, x.StrideB);
        var d = new BlasOperand(nameof(x.D), x.D, x.DType, x.M, x.N, x.Ldd, x.StrideD);
        LeadingDimension(call, nameof(x.Lda), a, x.TransposeA, x.M, x.K);
        LeadingDimension(call, nameof(x.Ldb), b, x.TransposeB, x.K, x.N);
        LeadingDimension(call, nameof(x.Ldd), d, null, x.M, x.N);
        NotNull(call, nameof(x.A), x.A);
        NotNull(call, nameof(x.B), x.B);
        NotNull(call, nameof(x.D), x.D);

        BlasOperand? c = null;
        if (!x.C.IsNull)
        {
            c = new BlasOperand(nameof(x.C), x.C, x.DType, x.M, x.N, x.Ldc, x.StrideC);
            LeadingDimension(call, nameof(x.Ldc), c.Value, null, x.M, x.N);
        }
        else if (x.Beta != 0)
            throw new BlasArgumentException(call, nameof(x.C), $"C is null but Beta = {x.Beta} would read it (C may be null only when Beta is 0)");

        var operands = new LtOperands(a, b, c, d, LtBias(call, x), LtAux(call, x));
        Addressable(call, x.BatchCount, a, b, c ?? d, d, operands.Bias ?? d, operands.Aux ?? d);
        return operands;
    }

    private static BlasOperand? LtBias(string call, LtMatmulArguments x)
    {
        bool used = x.Epilogue is LtEpilogue.Bias or LtEpilogue.GeluBias or LtEpilogue.GeluAuxBias or LtEpilogue.BGradB;
        if (!used)
        {
            if (!x.Bias.IsNull)
                throw new BlasArgumentException(call, nameof(x.Bias), $"Bias is set but the epilogue {x.Epilogue} does not use it");
            return null;
        }
        if (x.Bias.IsNull)
            throw new BlasArgumentException(call, nameof(x.Bias), $"the epilogue {x.Epilogue} needs Bias, which is null");
        if (x.BiasType != x.DType)
            throw new BlasArgumentException(call, nameof(x.BiasType),
                $"BiasType {x.BiasType} is not supported with DType {x.DType}: cuBLASLt's type table gives the bias D's type");
        // BGRADB's vector runs along D's columns, the bias epilogues' along its rows.
        long length = x.Epilogue == LtEpilogue.BGradB ? x.N : x.M;
        return new BlasOperand(nameof(x.Bias), x.Bias, x.BiasType, length, 1, length, x.BiasBatchStride);
    }

    private static BlasOperand? LtAux(string call, LtMatmulArguments x)
    {
        bool used = x.Epilogue is LtEpilogue.GeluAuxBias or LtEpilogue.DGelu;
        if (!used)
        {
            if (!x.Aux.IsNull)
                throw new BlasArgumentException(call, nameof(x.Aux), $"Aux is set but the epilogue {x.Epilogue} does not use it");
            return null;
        }
        if (x.Aux.IsNull)
            throw new BlasArgumentException(call, nameof(x.Aux), $"the epilogue {x.Epilogue} needs Aux, which is null");
        if (x.AuxLd < Math.Max(1, x.M) || x.AuxLd % 8 != 0)
            throw new BlasArgumentException(call, nameof(x.AuxLd),
                $"AuxLd = {x.AuxLd} must be at least M = {x.M} and a multiple of 8 (cuBLASLt's rule for the GELU aux matrix)");
        if (x.BatchCount > 1 && x.AuxBatchStride % 8 != 0)
            throw new BlasArgumentException(call, nameof(x.AuxBatchStride),
                $"AuxBatchStride = {x.AuxBatchStride} must be a multiple of 8 (cuBLASLt's rule for the GELU aux matrix)");
        return new BlasOperand(nameof(x.Aux), x.Aux, x.DType, x.M, x.N, x.AuxLd, x.AuxBatchStride);
    }

    // A matrix that op() turns into rows x columns, as it lies in memory: transposed, it is stored columns x rows.
    private static BlasOperand Stored(string name, DevicePtr pointer, DType type, BlasOperation operation, long rows, long columns, long ld, long stride) =>
        operation == BlasOperation.NoTranspose
            ? new BlasOperand(name, pointer, type, rows, columns, ld, stride)
            : new BlasOperand(name, pointer, type, columns, rows, ld, stride);

    private static void LeadingDimension(string call, string argument, BlasOperand operand, BlasOperation? operation, long rows, long columns)
    {
        long required = Math.Max(1, operand.Rows);
        if (operand.Ld >= required) return;
        string shape = operation is { } op
            ? $"op({operand.Name}) is {rows} x {columns} with {op}, so {operand.Name} has {operand.Rows} rows as stored"
            : $"{operand.Name} has {operand.Rows} rows";
        throw new BlasArgumentException(call, argument,
            $"{argument} = {operand.Ld} is less than max(1, rows of {operand.Name} as stored) = {required} ({shape})");
    }

    // Sizes, leading dimensions and strides so large that the touched extent overflows 64 bits are refused, not wrapped.
    private static void Addressable(string call, int batchCount, params ReadOnlySpan<BlasOperand> operands)
    {
        foreach (var operand in operands)
        {
            try { operand.TouchedBytes(batchCount); }
            catch (OverflowException)
            {
                throw new BlasArgumentException(call, operand.Name, $"{operand.Describe(batchCount)} spans more than 2^63 bytes");
            }
        }
    }

    private static void Types(string call, DType aType, DType bType, string outputName, DType outputType)
    {
        if (aType is not (DType.F32 or DType.BF16 or DType.F16))
            throw new BlasArgumentException(call, "aType", $"A's type {aType} is not supported (F32, BF16 or F16)");
        if (bType != aType)
            throw new BlasArgumentException(call, "bType", $"B's type {bType} differs from A's {aType}; cuBLAS needs them equal");
        bool supported = outputType == DType.F32 || (outputType == aType && aType != DType.F32);
        if (!supported)
            throw new BlasArgumentException(call, outputName,
                $"{outputName} {outputType} is not supported with {aType} inputs (F32 -> F32; BF16 -> BF16 or F32; F16 -> F16 or F32)");
    }

    private static void Operation(string call, string argument, BlasOperation operation)
    {
        if (operation is not (BlasOperation.NoTranspose or BlasOperation.Transpose))
            throw new BlasArgumentException(call, argument, $"{argument} = {(int)operation} is not NoTranspose or Transpose");
    }

    private static void AtLeast(string call, string argument, long value, long minimum)
    {
        if (value < minimum) throw new BlasArgumentException(call, argument, $"{argument} = {value} must be at least {minimum}");
    }

    private static void NotNull(string call, string argument, DevicePtr pointer)
    {
        if (pointer.IsNull) throw new BlasArgumentException(call, argument, $"{argument} is the null pointer");
    }
}
