using Phi2Native.Autograd;
using Phi2Native.FineTuning.Data;
using Phi2Native.FineTuning.Lora;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;

namespace Phi2Native.Embedded;

/// <summary>
/// What freezing saves in one training step, counted by the engine itself: the <see cref="GradientTape"/> records only
/// ops with an input that requires a gradient and <see cref="GradientTape.BackwardOpsRun"/> counts the ops its backward
/// ran, so a step with the selection's frozen base is compared with the same step with every parameter trainable.
/// </summary>
/// <param name="OpsRun">Ops the selection's backward ran.</param>
/// <param name="OpsRunTrainingEverything">Ops the backward ran with every base parameter trainable too (the adapters kept).</param>
/// <param name="OpsBelowLowestTrainedLayer">
/// Of those, the ops below the lowest trained layer (the embedding and every layer under it, up to the first op of that
/// layer): the selection's tape records none of them, so its backward stops there.
/// </param>
public sealed record BackwardWork(int OpsRun, int OpsRunTrainingEverything, int OpsBelowLowestTrainedLayer)
{
    /// <summary>Ops a full backward would run that this one skips, below the lowest trained layer and frozen ones above it.</summary>
    public int OpsSkipped => OpsRunTrainingEverything - OpsRun;

    /// <summary>
    /// Runs one forward and backward of <paramref name="batch"/> twice on a fresh copy of the base from
    /// <paramref name="createBase"/> (the model being trained is not touched): once with <paramref name="selection"/>'s
    /// adapters over the frozen base, once with every base parameter trainable as well.
    /// </summary>
    /// <param name="createBase">Makes a copy of the base (on the backend the run computes on).</param>
    /// <param name="selection">What trains; it must train something inside the layers.</param>
    /// <param name="lowestTrainedLayer">The lowest layer with anything trainable.</param>
    /// <param name="batch">A training batch.</param>
    internal static BackwardWork Measure(Func<Phi2Model> createBase, LoraConfig selection, int lowestTrainedLayer, TrainingBatch batch)
    {
        using var model = createBase();
        using var lora = LoraModel.Create(model, selection);
        var (frozenRun, _) = Step(model, batch, null);
        // Every base parameter trains as well: the backward now runs to the embedding.
        model.SetRequiresGrad(true);
        var firstOpOfLowest = model.Layers[lowestTrainedLayer].InputLayerNorm.Weight;
        var (everythingRun, below) = Step(model, batch, firstOpOfLowest);
        return new BackwardWork(frozenRun, everythingRun, below);
    }

    /// <summary>One step's backward ops run, and how many recorded ops precede the first op reading <paramref name="boundary"/>.</summary>
    private static (int Run, int Before) Step(Phi2Model model, TrainingBatch batch, Tensor? boundary)
    {
        using var scope = TensorScope.Begin();
        using var tape = GradientTape.Begin();
        var loss = model.CausalLanguageModelLoss(model.Forward(model.CreateInputIds(batch.InputIds, batch.BatchSize)), batch.Labels);
        // Counted before backward, which releases what the ops saved (their inputs stay listed).
        int before = boundary is null ? 0 : IndexOfFirstReader(tape.Ops, boundary);
        tape.Backward(loss);
        return (tape.BackwardOpsRun, before);
    }

    private static int IndexOfFirstReader(IReadOnlyList<AutogradOp> ops, Tensor parameter)
    {
        for (int i = 0; i < ops.Count; i++)
            if (ops[i].Inputs.Any(input => ReferenceEquals(input, parameter))) return i;
        throw new InvalidOperationException($"no recorded op reads {parameter.Name}: it requires no gradient, or the layer never ran");
    }
}
