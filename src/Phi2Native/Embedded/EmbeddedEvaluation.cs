using Phi2Native.FineTuning.Data;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;

namespace Phi2Native.Embedded;

/// <summary>
/// The validation loss of a model over packed rows, computed as <see cref="FineTuning.Training.Trainer.Evaluate"/>
/// computes it (mean loss per scored token, in order, evaluation mode, no tape), for texts other than a trainer's
/// own validation rows: the demo scores the base and the adapted model on Exodus and on Genesis with it.
/// </summary>
internal static class EmbeddedEvaluation
{
    /// <summary>Mean loss per scored token of <paramref name="model"/> (with whatever adapters it carries) over every row.</summary>
    /// <param name="model">The model; left in the training mode it was in.</param>
    /// <param name="rows">Packed rows; every position after the first of a row is scored unless its label is ignored.</param>
    /// <param name="batchSize">Rows per forward.</param>
    public static double MeanLoss(Phi2Model model, TrainingRows rows, int batchSize)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(rows);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        bool wasTraining = model.Training;
        model.Training = false;
        try
        {
            var loader = new BatchLoader(rows, new DataOrder(rows.Count, batchSize, seed: 0, shuffle: false));
            double lossSum = 0;
            long scored = 0;
            foreach (var batch in loader.RestOfEpoch())
            {
                int targets = ScoredTargets(batch);
                if (targets == 0) continue;
                using var scope = TensorScope.Begin();
                var loss = model.ForwardLoss(model.CreateInputIds(batch.InputIds, batch.BatchSize), batch.Labels);
                lossSum += loss.Item() * targets;
                scored += targets;
            }
            return scored == 0 ? double.NaN : lossSum / scored;
        }
        finally
        {
            model.Training = wasTraining;
        }
    }

    // Position t is scored when labels[t + 1] is not ignored: the shift CausalLanguageModelLoss and ForwardLoss apply.
    private static int ScoredTargets(TrainingBatch batch)
    {
        int count = 0;
        for (int b = 0; b < batch.BatchSize; b++)
            for (int t = 1; t < batch.Time; t++)
                if (batch.Labels[b * batch.Time + t] != TokenizedExample.IgnoreLabel) count++;
        return count;
    }
}
