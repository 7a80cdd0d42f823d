using NUnit.Framework;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Emulator;
using Phi2Native.DeviceChecks;
using Phi2Native.Tensors;

namespace Phi2Native.Tests.Cuda;

/// <summary>
/// <see cref="EmulatedBlas"/>'s LtMatmul against the definition of each epilogue (see <see cref="LtEpilogue"/>),
/// computed in double from <see cref="NaiveBlas"/>'s product and GELU: C separate from D or D itself, padded
/// leading dimensions, batches with bias and aux strides.
/// </summary>
[TestFixture, Category("Emulated")]
internal class EmulatedLtMatmulTests
{
    private const BlasOperation N = BlasOperation.NoTranspose, T = BlasOperation.Transpose;

    /// <summary>How C is given: not at all (beta 0), as its own buffer with its own ld, or as D itself.</summary>
    public enum CKind { None, Separate, InPlace }

    /// <summary>One LtMatmul.</summary>
    public sealed record LtCase(LtEpilogue Epilogue, BlasOperation TransposeA, BlasOperation TransposeB, int M, int N, int K, DType InputType, DType OutputType)
    {
        public float Alpha { get; init; } = 1;
        public float Beta { get; init; }
        public CKind C { get; init; }
        public int PadD { get; init; }
        public int BatchCount { get; init; } = 1;

        public override string ToString() =>
            $"{Epilogue} {TransposeA}{TransposeB} {InputType}->{OutputType} {M}x{N}x{K} alpha {Alpha} beta {Beta} C {C} padD {PadD} batch {BatchCount}";
    }

    private static IEnumerable<TestCaseData> Cases()
    {
        // Default: C absent, separate (its own ld), or D itself.
        yield return Case(new(LtEpilogue.Default, N, N, 7, 5, 3, DType.F32, DType.F32) { PadD = 2 });
        yield return Case(new(LtEpilogue.Default, T, N, 9, 6, 11, DType.BF16, DType.BF16) { Beta = 1, C = CKind.Separate, PadD = 1 });
        yield return Case(new(LtEpilogue.Default, N, T, 9, 6, 11, DType.F16, DType.F32) { Alpha = -2, Beta = 0.5f, C = CKind.InPlace });

        foreach (var ta in new[] { N, T })
            foreach (var tb in new[] { N, T })
            {
                yield return Case(new(LtEpilogue.Bias, ta, tb, 13, 7, 10, DType.BF16, DType.BF16) { PadD = 3 });
                yield return Case(new(LtEpilogue.GeluAuxBias, ta, tb, 11, 6, 9, DType.BF16, DType.BF16) { Alpha = 1.5f });
                yield return Case(new(LtEpilogue.DGelu, ta, tb, 10, 7, 5, DType.F32, DType.F32) { PadD = 1 });
                yield return Case(new(LtEpilogue.BGradB, ta, tb, 6, 9, 13, DType.BF16, DType.F32));
            }

        yield return Case(new(LtEpilogue.Bias, N, T, 5, 4, 3, DType.F32, DType.F32) { Beta = 1, C = CKind.Separate });
        yield return Case(new(LtEpilogue.GeluAuxBias, T, N, 8, 5, 6, DType.F16, DType.F16) { Beta = -1, C = CKind.Separate, PadD = 2 });
        yield return Case(new(LtEpilogue.GeluAuxBias, N, N, 9, 4, 7, DType.F32, DType.F32) { Beta = 1, C = CKind.InPlace });
        yield return Case(new(LtEpilogue.GeluBias, T, N, 10, 6, 7, DType.BF16, DType.BF16) { PadD = 1 });
        yield return Case(new(LtEpilogue.GeluBias, N, N, 9, 4, 7, DType.F32, DType.F32) { Beta = 1, C = CKind.InPlace });
        yield return Case(new(LtEpilogue.DGelu, T, T, 12, 5, 8, DType.BF16, DType.BF16) { Beta = 1, C = CKind.Separate });
        yield return Case(new(LtEpilogue.BGradB, N, T, 7, 8, 9, DType.F32, DType.F32) { Alpha = 0.5f, Beta = 1, C = CKind.Separate });

        // Batches: every operand, the bias and the aux matrix advance by their own strides.
        foreach (var epilogue in Enum.GetValues<LtEpilogue>())
            yield return Case(new(epilogue, T, N, 9, 5, 6, DType.BF16, DType.BF16) { BatchCount = 3, PadD = 1, Beta = 1, C = CKind.Separate });
    }

    private static TestCaseData Case(LtCase c) => new TestCaseData(c).SetName(c.ToString());

    [TestCaseSource(nameof(Cases))]
    public void EpilogueMatchesItsDefinition(LtCase c)
    {
        using var device = new EmulatedDevice();
        int m = c.M, n = c.N, k = c.K, batches = c.BatchCount;
        int rowsA = c.TransposeA == N ? m : k, columnsA = c.TransposeA == N ? k : m;
        int rowsB = c.TransposeB == N ? k : n, columnsB = c.TransposeB == N ? n : k;
        int lda = rowsA + 1, ldb = rowsB + 2, ldd = m + c.PadD, ldc = c.C == CKind.Separate ? m + 4 : ldd;
        long strideA = Extent(rowsA, columnsA, lda) + 3, strideB = Extent(rowsB, columnsB, ldb) + 1;
        long strideD = Extent(m, n, ldd) + 5, strideC = c.C == CKind.Separate ? Extent(m, n, ldc) + 2 : strideD;
        int biasLength = c.Epilogue == LtEpilogue.BGradB ? n : m;
        long biasStride = biasLength + 3;
        int auxLd = (m + 7) / 8 * 8 + 8;
        long auxStride = (Extent(m, n, auxLd) + 7 + 5) / 8 * 8;

        float[] a = NaiveBlas.Random(rowsA, columnsA, lda, c.InputType, 21, batches, strideA);
        float[] b = NaiveBlas.Random(rowsB, columnsB, ldb, c.InputType, 22, batches, strideB);
        float[] c0 = c.C == CKind.None ? [] : NaiveBlas.Random(m, n, ldc, c.OutputType, 23, batches, strideC);
        float[] d0 = c.C == CKind.InPlace ? c0 : NaiveBlas.Matrix(m, n, ldd, (_, _, _) => float.NaN, batches, strideD);
        bool biasIn = c.Epilogue is LtEpilogue.Bias or LtEpilogue.GeluBias or LtEpilogue.GeluAuxBias;
        float[] bias0 = NaiveBlas.Matrix(biasLength, 1, biasLength,
            biasIn ? (batch, i, _) => NaiveBlas.Round(c.OutputType, 0.25 * (i % 5) - 0.5 + batch) : (_, _, _) => float.NaN, batches, biasStride);
        // DGELU reads aux: values over [-3, 3] cover both tails and the bend of gelu'.
        float[] aux0 = NaiveBlas.Matrix(m, n, auxLd, c.Epilogue == LtEpilogue.DGelu
            ? (batch, i, j) => NaiveBlas.Round(c.OutputType, ((i * 7 + j * 3 + batch) % 13 - 6) / 2.0)
            : (_, _, _) => float.NaN, batches, auxStride);

        using var deviceA = DeviceBuffer.Upload(device, c.InputType, a);
        using var deviceB = DeviceBuffer.Upload(device, c.InputType, b);
        using var deviceC = c.C == CKind.Separate ? DeviceBuffer.Upload(device, c.OutputType, c0) : null;
        using var deviceD = DeviceBuffer.Upload(device, c.OutputType, d0);
        bool usesBias = biasIn || c.Epilogue == LtEpilogue.BGradB, usesAux = c.Epilogue is LtEpilogue.GeluAuxBias or LtEpilogue.DGelu;
        using var deviceBias = usesBias ? DeviceBuffer.Upload(device, c.OutputType, bias0) : null;
        using var deviceAux = usesAux ? DeviceBuffer.Upload(device, c.OutputType, aux0) : null;

        device.Blas.LtMatmul(new LtMatmulArguments
        {
            TransposeA = c.TransposeA, TransposeB = c.TransposeB, M = m, N = n, K = k, Alpha = c.Alpha, Beta = c.Beta,
            A = deviceA.Pointer, AType = c.InputType, Lda = lda, StrideA = strideA,
            B = deviceB.Pointer, BType = c.InputType, Ldb = ldb, StrideB = strideB,
            C = c.C switch { CKind.Separate => deviceC!.Pointer, CKind.InPlace => deviceD.Pointer, _ => DevicePtr.Null },
            Ldc = ldc, StrideC = strideC,
            D = deviceD.Pointer, DType = c.OutputType, Ldd = ldd, StrideD = strideD, BatchCount = batches,
            Epilogue = c.Epilogue,
            Bias = deviceBias?.Pointer ?? DevicePtr.Null, BiasType = c.OutputType, BiasBatchStride = biasStride,
            Aux = deviceAux?.Pointer ?? DevicePtr.Null, AuxLd = auxLd, AuxBatchStride = auxStride,
        }, default);

        float[] d = deviceD.Download(), bias = deviceBias?.Download() ?? [], aux = deviceAux?.Download() ?? [];
        for (int batch = 0; batch < batches; batch++)
        {
            string at = $"[batch {batch}]";
            var p = NaiveBlas.Product(c.TransposeA, c.TransposeB, m, n, k, c.Alpha, a, lda, batch * strideA, b, ldb, batch * strideB);
            var scale = NaiveBlas.AbsoluteProduct(c.TransposeA, c.TransposeB, m, n, k, c.Alpha, a, lda, batch * strideA, b, ldb, batch * strideB);
            if (c.Beta != 0)
            {
                p = BlasAssert.Add(p, BlasAssert.Extract(c0, batch * strideC, ldc, m, n, c.Beta));
                scale = BlasAssert.Add(scale, BlasAssert.Extract(c0, batch * strideC, ldc, m, n, Math.Abs(c.Beta)));
            }
            var expected = new double[p.Length];
            for (int j = 0; j < n; j++)
                for (int i = 0; i < m; i++)
                {
                    int x = i + j * m;
                    double biasValue = biasIn ? bias0[batch * biasStride + i] : 0;
                    double auxValue = aux0[batch * auxStride + i + j * auxLd];
                    expected[x] = c.Epilogue switch
                    {
                        LtEpilogue.Bias => p[x] + biasValue,
                        LtEpilogue.GeluAuxBias or LtEpilogue.GeluBias => NaiveBlas.Gelu(p[x] + biasValue),
                        LtEpilogue.DGelu => p[x] * NaiveBlas.GeluDerivative(auxValue),
                        _ => p[x],
                    };
                    scale[x] += Math.Abs(biasValue);
                }
            BlasAssert.Matrix("D" + at, d, batch * strideD, ldd, m, n, expected, scale, c.OutputType);

            if (c.Epilogue == LtEpilogue.GeluAuxBias)
            {
                var preActivation = new double[p.Length];
                for (int x = 0; x < p.Length; x++) preActivation[x] = p[x] + bias0[batch * biasStride + x % m];
                BlasAssert.Matrix("Aux" + at, aux, batch * auxStride, auxLd, m, n, preActivation, scale, c.OutputType);
            }
            if (c.Epilogue == LtEpilogue.BGradB)
            {
                // The bias gradient: op(B) summed over the k dimension, one value per column of D.
                var gradient = new double[n];
                var gradientScale = new double[n];
                for (int j = 0; j < n; j++)
                    for (int q = 0; q < k; q++)
                    {
                        double value = c.TransposeB == N ? b[batch * strideB + q + j * ldb] : b[batch * strideB + j + q * ldb];
                        gradient[j] += value;
                        gradientScale[j] += Math.Abs(value);
                    }
                BlasAssert.Matrix("Bias" + at, bias, batch * biasStride, n, n, 1, gradient, gradientScale, c.OutputType);
            }
        }
        BlasAssert.PaddingUntouched("D", d, m, n, ldd, batches, strideD);
        if (c.Epilogue == LtEpilogue.GeluAuxBias) BlasAssert.PaddingUntouched("Aux", aux, m, n, auxLd, batches, auxStride);
        if (c.Epilogue == LtEpilogue.BGradB) BlasAssert.PaddingUntouched("Bias", bias, n, 1, n, batches, biasStride);
        if (c.Epilogue is LtEpilogue.DGelu) Assert.That(aux, Is.EqualTo(aux0), "DGELU reads aux and must not write it");
        if (biasIn) Assert.That(bias, Is.EqualTo(bias0), "the bias epilogues read the bias and must not write it");
    }

    [Test]
    public void TheGeluIsTheTanhFormNotTheErfForm()
    {
        // At x = 1 the two forms differ by about 1.6e-4 (erf: 0.8413447, tanh: 0.8411920), far above fp32 rounding:
        // a one-element product that feeds x = 1 into the epilogue tells them apart.
        using var device = new EmulatedDevice();
        using var one = DeviceBuffer.Upload(device, DType.F32, [1f]);
        using var zero = DeviceBuffer.Upload(device, DType.F32, [0f]);
        using var d = DeviceBuffer.Allocate(device, DType.F32, 1);
        using var aux = DeviceBuffer.Allocate(device, DType.F32, 8);
        device.Blas.LtMatmul(new LtMatmulArguments
        {
            M = 1, N = 1, K = 1, A = one.Pointer, AType = DType.F32, Lda = 1, B = one.Pointer, BType = DType.F32, Ldb = 1,
            D = d.Pointer, DType = DType.F32, Ldd = 1, Epilogue = LtEpilogue.GeluAuxBias,
            Bias = zero.Pointer, BiasType = DType.F32, Aux = aux.Pointer, AuxLd = 8,
        }, default);
        Assert.That(d.Download()[0], Is.EqualTo(0.841192f).Within(2e-6f));
        Assert.That(Math.Abs(d.Download()[0] - 0.8413447f), Is.GreaterThan(1e-4f));
    }

    private static long Extent(int rows, int columns, int ld) => (long)(columns - 1) * ld + rows;
}
