using Phi2Native.Tensors;

namespace Phi2Native.Autograd.Ops;

/// <summary>
/// Mean cross-entropy of logits [N, V] against targets [N] (I32), over the rows whose target is not the ignore
/// index. Returns a one-element tensor; 0 (with zero gradient) when every row is ignored. Saves logSumExp [N].
/// </summary>
public sealed class CrossEntropyOp : AutogradOp
{
    /// <summary>The target value that marks a row as excluded from the loss (PyTorch's default).</summary>
    public const int DefaultIgnoreIndex = -100;

    private readonly Tensor _logits, _targets, _logSumExp;
    private readonly int _ignoreIndex, _counted;

    private CrossEntropyOp(Tensor logits, Tensor targets, Tensor logSumExp, int ignoreIndex, int counted) : base(logits) =>
        (_logits, _targets, _logSumExp, _ignoreIndex, _counted) = (logits, targets, logSumExp, ignoreIndex, counted);

    /// <inheritdoc/>
    public override string Name => "CrossEntropy";

    /// <summary>The number of rows that counted in the last forward of this op.</summary>
    public int Counted => _counted;

    /// <summary>Forward.</summary>
    public static Tensor Apply(Tensor logits, Tensor targets, int ignoreIndex = DefaultIgnoreIndex)
    {
        var backend = logits.Backend;
        var loss = backend.CrossEntropy(logits, targets, ignoreIndex, out var logSumExp, out int counted);
        if (counted > 0) backend.ScaleInPlace(loss, 1.0 / counted);
        return Record(new CrossEntropyOp(logits, targets, logSumExp, ignoreIndex, counted), loss);
    }

    /// <inheritdoc/>
    protected internal override void Backward(Tensor dOutput, BackwardContext context)
    {
        var dLogits = context.NewGradient(_logits)!;
        double scale = _counted == 0 ? 0 : dOutput.Item() / _counted;
        _logits.Backend.CrossEntropyBackward(_logits, _targets, _logSumExp, _ignoreIndex, scale, dLogits);
        context.Deliver(_logits, dLogits);
    }

    /// <inheritdoc/>
    protected internal override void ReleaseSaved() => _logSumExp.Dispose();
}
