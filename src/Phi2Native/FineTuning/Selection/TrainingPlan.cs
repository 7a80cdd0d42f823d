using Phi2Native.FineTuning.Lora;
using Phi2Native.Models.Phi2;

namespace Phi2Native.FineTuning.Selection;

/// <summary>
/// What a run would train and what memory it would need, worked out from a model's config alone (no weights loaded):
/// one row per module with its shape, parameters, role and training (LoRA r, full, frozen).
/// </summary>
public sealed class TrainingPlan
{
    /// <summary>One module of the model.</summary>
    /// <param name="Name">Full HF name, e.g. model.layers.0.self_attn.q_proj.</param>
    /// <param name="Shape">The weight's shape.</param>
    /// <param name="Parameters">Weight and bias elements.</param>
    /// <param name="Training">"LoRA r=8", "full" or "frozen".</param>
    /// <param name="TrainableParameters">LoRA A and B elements, or every parameter for full training.</param>
    public sealed record Row(string Name, int[] Shape, long Parameters, string Training, long TrainableParameters)
    {
        /// <summary>The module's role (see <see cref="ModuleRole"/>).</summary>
        public ModuleRole? Role => ModuleRole.Of(Name);
    }

    /// <summary>Bytes the run needs, by kind (an estimate: activations depend on the backend).</summary>
    public sealed record MemoryEstimate(long Weights, long TrainableParameters, long Gradients, long OptimizerState, long Activations)
    {
        /// <summary>All of it.</summary>
        public long Total => Weights + TrainableParameters + Gradients + OptimizerState + Activations;
    }

    private TrainingPlan(Phi2Config config, IReadOnlyList<Row> rows) => (Config, Rows) = (config, rows);

    /// <summary>The model's config.</summary>
    public Phi2Config Config { get; }

    /// <summary>Every module, in checkpoint order.</summary>
    public IReadOnlyList<Row> Rows { get; }

    /// <summary>Parameters of the base model.</summary>
    public long TotalParameters => Rows.Sum(r => r.Parameters);

    /// <summary>Parameters that train (LoRA matrices plus fully trained modules).</summary>
    public long TrainableParameters => Rows.Sum(r => r.TrainableParameters);

    /// <summary>The lowest layer with anything trainable (backward stops there), or null when only modules outside the layers train.</summary>
    public int? LowestTrainedLayer { get; private init; }

    /// <summary>
    /// Works out the plan for <paramref name="config"/> under <paramref name="lora"/> (null: everything frozen) by walking
    /// the model's module tree, built without memory, with the selection LoRA itself applies.
    /// </summary>
    /// <exception cref="Phi2Exception"><paramref name="lora"/> does not fit the model, as LoraModel.Create would refuse it.</exception>
    public static TrainingPlan Create(Phi2Config config, LoraConfig? lora)
    {
        using var model = Phi2Model.CreateShapeOnly(config);
        var selection = lora is null ? ModuleSelection.Frozen(model) : ModuleSelection.Resolve(model, lora);
        var rows = new List<Row>();
        foreach (var (module, training) in selection)
        {
            int[] weight = module.Parameters(recurse: false).First().Shape.ToArray();
            long parameters = module.Parameters(recurse: false).Sum(p => p.ElementCount);
            rows.Add(training switch
            {
                ModuleTraining.Full => new Row(module.Name, weight, parameters, "full", parameters),
                // A [r, in] and B [out, r]; an Embedding's A [r, V] and B [C, r] count the same.
                ModuleTraining.Lora => new Row(module.Name, weight, parameters, $"LoRA r={lora!.R}", (long)lora.R * (weight[0] + weight[1])),
                _ => new Row(module.Name, weight, parameters, "frozen", 0),
            });
        }
        var trained = selection.Where(s => s.Training != ModuleTraining.Frozen).Select(s => s.Module).ToHashSet();
        // Backward runs down to the lowest layer holding a trained module, and through every layer when the embedding trains.
        int? lowest = trained.Contains(model.EmbedTokens) ? 0
            : model.Layers.Where(layer => layer.NamedModules().Any(trained.Contains)).Select(layer => (int?)layer.Index).Min();
        return new TrainingPlan(config, rows) { LowestTrainedLayer = lowest };
    }

    /// <summary>
    /// Memory for a training step at batch <paramref name="batch"/> x <paramref name="time"/>: weights in
    /// <paramref name="weightBytes"/> per element, trainable tensors, gradients and AdamW's two moments in fp32, and the
    /// activations backward keeps, which exist only from the lowest trained layer up (below it nothing is saved).
    /// </summary>
    public MemoryEstimate EstimateMemory(int batch, int time, int weightBytes = 4, int activationBytes = 4)
    {
        long trainableAdapters = Rows.Where(r => r.Training.StartsWith("LoRA", StringComparison.Ordinal)).Sum(r => r.TrainableParameters);
        long trainable = TrainableParameters;
        long tokens = (long)batch * time, c = Config.HiddenSize, inner = Config.IntermediateSize;
        // Saved per layer: h, LayerNorm out, q/k/v and rotated q/k, attention out, dense out, fc1 out, gelu out, fc2 out,
        // two residual sums: about 12 C + 2 I values per token (plus LayerNorm and softmax statistics, negligible).
        long perLayer = tokens * (12 * c + 2 * inner);
        int trainedLayers = LowestTrainedLayer is { } lowest ? Config.NumHiddenLayers - lowest : 0;
        // The head: final LayerNorm in and out, logits and their gradient (the largest single tensors of a step).
        long head = trainable > 0 ? tokens * (2 * c + 2L * Config.VocabSize) : 0;
        return new MemoryEstimate(
            Weights: TotalParameters * weightBytes,
            TrainableParameters: trainableAdapters * 4,
            Gradients: trainable * 4,
            OptimizerState: trainable * 8,
            Activations: (trainedLayers * perLayer + head) * activationBytes);
    }
}
