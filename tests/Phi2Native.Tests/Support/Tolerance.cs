using Phi2Native.Tensors;

namespace Phi2Native.Tests.Support;

/// <summary>
/// Every tolerance of the suite, in one place. An element passes when
/// |actual - expected| &lt;= Absolute * max|expected| + Relative * |expected|: the absolute part scales with the
/// tensor so that near-zero elements of a large tensor are not held to a relative bound they cannot meet.
/// </summary>
public readonly record struct Tolerance(double Absolute, double Relative)
{
    /// <summary>Forward values (logits, loss) computed in this dtype against a float64 reference.</summary>
    public static Tolerance Forward(DType dtype) => dtype switch
    {
        DType.F64 => new(1e-12, 1e-10),
        DType.F32 => new(1e-5, 1e-4),
        _ => new(1e-2, 1e-2),
    };

    /// <summary>Gradients computed in this dtype against a float64 reference.</summary>
    public static Tolerance Gradient(DType dtype) => dtype switch
    {
        DType.F64 => new(1e-10, 1e-8),
        DType.F32 => new(1e-4, 1e-3),
        _ => new(5e-2, 5e-2),
    };

    /// <summary>
    /// Parameters and AdamW moments after a few optimizer steps, in this dtype, against torch.optim.AdamW in float64
    /// stored as F32 (golden/adamw.safetensors), compared after rounding to F32. F64 meets the storage rounding; F32
    /// adds the rounding of each step's few element-wise operations (measured: at most 2 ulp, 1.5e-7 relative).
    /// </summary>
    public static Tolerance Optimizer(DType dtype) => dtype switch
    {
        DType.F64 => new(1e-7, 1e-6),
        _ => new(2e-7, 2e-6),
    };

    /// <summary>Analytic double-precision gradients against central finite differences (h = 1e-6).</summary>
    public static Tolerance FiniteDifference => new(1e-7, 1e-6);

    /// <summary>
    /// Span-level kernel tests, whose comparisons use a plain absolute part: |a - e| &lt;= atol + rtol * |e|.
    /// </summary>
    public static class Kernel
    {
        /// <summary>Forward in double against the double reference: only rounding separates them.</summary>
        public const double DoubleAtol = 1e-12, DoubleRtol = 1e-10;

        /// <summary>The float path against the double path (reductions over a few hundred terms lose a little more than 1 ulp).</summary>
        public const double FloatAtol = 2e-5, FloatRtol = 2e-5;

        /// <summary>Central-difference step and the allowed gap between numeric and analytic gradients (truncation ~h^2, rounding ~1e-16/h).</summary>
        public const double FdStep = 1e-6, GradTol = 1e-7;
    }
}
