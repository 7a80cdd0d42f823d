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

    /// <summary>Analytic double-precision gradients against central finite differences (h = 1e-6).</summary>
    public static Tolerance FiniteDifference => new(1e-7, 1e-6);
}
