using NUnit.Framework;
using Phi2Native.Autograd;
using Phi2Native.Autograd.Ops;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Ops.Projection;
using Phi2Native.Tensors;

namespace Phi2Native.Tests.Support;

/// <summary>
/// Finite-difference gradient checks in double precision through the autograd: the analytic gradient of
/// L = sum(f(inputs) * r), r random and fixed, against central differences (L(x + h) - L(x - h)) / 2h.
/// </summary>
public static class GradientCheck
{
    public static readonly CpuBackend Backend = new(poisonNewMemory: true);

    /// <summary>An F64 tensor of normal(0, scale) values, optionally requiring a gradient.</summary>
    public static Tensor Random(Random random, int[] shape, double scale = 1, bool requiresGrad = true)
    {
        var values = new double[Tensor.CountElements(shape)];
        for (int i = 0; i < values.Length; i++)
            values[i] = scale * Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());
        var tensor = Backend.FromBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()), DType.F64, shape, DType.F64);
        tensor.RequiresGrad = requiresGrad;
        return tensor;
    }

    /// <summary>An I32 tensor.</summary>
    public static Tensor Ids(int[] ids, params int[] shape) =>
        Backend.FromBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(ids.AsSpan()), DType.I32, shape, DType.I32);

    /// <summary>
    /// Checks every input that requires a gradient, at up to <paramref name="samplesPerInput"/> elements each
    /// (all of them for small inputs).
    /// </summary>
    public static void Check(string name, Func<Tensor> function, IReadOnlyList<Tensor> inputs, int seed = 7, int samplesPerInput = 40, double step = Tolerance.Kernel.FdStep)
    {
        var random = new Random(seed);
        Tensor? weights = null;
        double Objective(bool record)
        {
            using var scope = TensorScope.Begin();
            var output = function();
            weights ??= (Tensor)TensorScope.Detach(Random(random, [1, (int)output.ElementCount], requiresGrad: false));
            var flat = ReshapeOp.Apply(output, 1, (int)output.ElementCount);
            var objective = LinearOp.Apply(flat, weights, null);
            if (record) GradientTape.Current!.Backward(objective);
            return objective.Item();
        }

        foreach (var input in inputs) input.ZeroGrad();
        double objectiveAtInput;
        using (var tape = GradientTape.Begin()) objectiveAtInput = Objective(record: true);
        // Central differences cannot resolve below the rounding of the objective itself: ~eps |L| / h.
        double noiseFloor = 8 * (Math.BitIncrement(1.0) - 1.0) * Math.Abs(objectiveAtInput) / step;
        try
        {
            foreach (var input in inputs.Where(i => i.RequiresGrad))
            {
                Assert.That(input.Grad, Is.Not.Null, $"{name}: input {input} got no gradient");
                var analytic = input.Grad!.ToDoubleArray();
                int length = (int)input.ElementCount;
                var indices = length <= samplesPerInput
                    ? Enumerable.Range(0, length).ToArray()
                    : Enumerable.Range(0, samplesPerInput).Select(_ => random.Next(length)).Distinct().ToArray();
                var expected = new double[indices.Length];
                var actual = new double[indices.Length];
                for (int n = 0; n < indices.Length; n++)
                {
                    int i = indices[n];
                    double original = CpuBackend.Span<double>(input)[i];
                    CpuBackend.Span<double>(input)[i] = original + step;
                    double plus = Objective(record: false);
                    CpuBackend.Span<double>(input)[i] = original - step;
                    double minus = Objective(record: false);
                    CpuBackend.Span<double>(input)[i] = original;
                    expected[n] = (plus - minus) / (2 * step);
                    actual[n] = analytic[i];
                }
                TensorAssert.Close($"{name}: d/d{input.Name ?? "input"} at [{string.Join(", ", indices.Take(8))}...]", expected, actual, Tolerance.FiniteDifference, absoluteFloor: noiseFloor);
            }
        }
        finally
        {
            weights?.Dispose();
        }
    }
}
