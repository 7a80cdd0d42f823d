using Phi2Native.Tensors;

namespace Phi2Native.Autograd.Ops;

/// <summary>
/// Inverted dropout with a counter-based mask: element i is kept when hash(seed, i) >= p and scaled by 1/(1-p).
/// Nothing is stored; backward recomputes the mask from the seed.
/// </summary>
public sealed class DropoutOp : AutogradOp
{
    private readonly double _probability;
    private readonly ulong _seed;

    private DropoutOp(Tensor x, double probability, ulong seed) : base(x) => (_probability, _seed) = (probability, seed);

    /// <inheritdoc/>
    public override string Name => "Dropout";

    /// <summary>Forward; p = 0 returns x itself.</summary>
    public static Tensor Apply(Tensor x, double probability, ulong seed)
    {
        if (!NumberChecks.IsProbability(probability)) throw new ArgumentOutOfRangeException(nameof(probability), probability, "dropout probability must be in [0, 1)");
        if (probability == 0) return x;
        return Record(new DropoutOp(x, probability, seed), x.Backend.Dropout(x, probability, seed));
    }

    /// <inheritdoc/>
    protected internal override void Backward(Tensor dOutput, BackwardContext context)
    {
        var x = Inputs[0]!;
        var dx = context.NewGradient(x)!;
        x.Backend.DropoutBackward(dOutput, dx, _probability, _seed);
        context.Deliver(x, dx);
    }
}
