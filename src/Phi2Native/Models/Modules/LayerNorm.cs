using Phi2Native.Autograd.Ops;
using Phi2Native.Backends.Ops.Normalization;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Models.Modules;

/// <summary>LayerNorm over the last dimension with weight and bias [C] (biased variance, as torch.nn.LayerNorm).</summary>
public sealed class LayerNorm : Module
{
    /// <summary>Loads the module's parameters from <paramref name="weights"/>.</summary>
    public LayerNorm(string name, int channels, double eps, WeightSource weights) : base(name)
    {
        Eps = eps;
        Weight = Take(weights, "weight", channels);
        Bias = Take(weights, "bias", channels);
    }

    /// <summary>The epsilon added to the variance (config layer_norm_eps).</summary>
    public double Eps { get; }

    /// <summary>[C].</summary>
    public Tensor Weight { get; }

    /// <summary>[C].</summary>
    public Tensor Bias { get; }

    /// <summary>x [..., C] -> [..., C].</summary>
    public Tensor Forward(Tensor x)
    {
        using var profile = ProfileScope.Module(Name);
        return LayerNormOp.Apply(x, Weight, Bias, Eps);
    }

    /// <inheritdoc/>
    protected override IEnumerable<Tensor> OwnParameters() => [Weight, Bias];
}
