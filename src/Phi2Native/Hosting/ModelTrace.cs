using Phi2Native.Autograd;
using Phi2Native.FineTuning.Lora;
using Phi2Native.IO;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;

namespace Phi2Native.Hosting;

/// <summary>One parameter's gradient in a <see cref="ModelTrace"/>: its HF name (a PEFT key for an adapter tensor), shape and values.</summary>
public sealed record TracedGradient(string Name, int[] Shape, float[] Values);

/// <summary>
/// What one evaluation-mode forward (and optionally backward) over a sequence gave: the logits [T, V], the causal-LM
/// loss and the gradients. <see cref="Phi2Engine.Trace"/> makes one; <see cref="Save"/> writes it as <c>phi2 trace</c> does.
/// </summary>
public sealed class ModelTrace
{
    private ModelTrace(int[] ids, int vocabularySize, float[] logits, float loss, IReadOnlyList<TracedGradient> gradients)
    {
        Ids = ids;
        VocabularySize = vocabularySize;
        Logits = logits;
        Loss = loss;
        Gradients = gradients;
    }

    /// <summary>The sequence.</summary>
    public IReadOnlyList<int> Ids { get; }

    /// <summary>V, the logits' row length.</summary>
    public int VocabularySize { get; }

    /// <summary>The logits, row-major [T, V].</summary>
    public float[] Logits { get; }

    /// <summary>The mean causal-LM loss over the T - 1 targets.</summary>
    public float Loss { get; }

    /// <summary>Every trained tensor's gradient, in parameter order (empty without gradients).</summary>
    public IReadOnlyList<TracedGradient> Gradients { get; }

    /// <summary>
    /// Writes a safetensors file holding exactly <c>logits</c> (F32 [T, V]), <c>loss</c> (F32 [1]) and
    /// <c>grad.&lt;name&gt;</c> (F32) per gradient, with <paramref name="metadata"/> in its header.
    /// </summary>
    /// <exception cref="Phi2Exception">The file's folder does not exist or is a file.</exception>
    public void Save(string path, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var writer = new SafeTensorsWriter();
        foreach (var (key, value) in metadata ?? new Dictionary<string, string>()) writer.Metadata[key] = value;
        writer.AddSingle("logits", Logits, [Ids.Count, VocabularySize]);
        writer.AddSingle("loss", [Loss], [1]);
        foreach (var gradient in Gradients) writer.AddSingle($"grad.{gradient.Name}", gradient.Values, Array.ConvertAll(gradient.Shape, d => (long)d));
        writer.Save(path);
    }

    // With an adapter exactly its trainable tensors get gradients (the base stays frozen); without, every parameter,
    // for this pass only: the model's requires-grad flags and gradients are as they were afterwards.
    internal static ModelTrace Run(Phi2Model model, LoraModel? adapter, IReadOnlyList<int> ids, bool gradients)
    {
        ArgumentNullException.ThrowIfNull(ids);
        if (ids.Count < 2) throw new ModelInputException($"a trace needs at least 2 ids (the causal-LM loss needs a target), got {ids.Count}");
        int[] sequence = [.. ids];
        bool wasTraining = model.Training;
        model.Training = false;
        var trained = adapter?.TrainableParameters().ToList() ?? model.Parameters().ToList();
        var requiredGrad = trained.Select(p => p.RequiresGrad).ToArray();
        try
        {
            if (gradients) foreach (var parameter in trained) parameter.RequiresGrad = true;
            using var scope = TensorScope.Begin();
            using var tape = gradients ? GradientTape.Begin() : null;
            var logits = model.Forward(model.CreateInputIds(sequence));
            var loss = model.CausalLanguageModelLoss(logits, sequence);
            tape?.Backward(loss);
            // A parameter no path reached (e.g. embedding rows of ids not in the input) still gets its zero gradient.
            var traced = gradients
                ? trained.Select(p => new TracedGradient(adapter is null ? p.Name! : LoraModel.PeftKey(p), p.Shape.ToArray(),
                    p.Grad?.ToSingleArray() ?? new float[p.ElementCount])).ToList()
                : [];
            return new ModelTrace(sequence, model.Config.VocabSize, logits.ToSingleArray(), loss.ToSingleArray()[0], traced);
        }
        finally
        {
            for (int i = 0; i < trained.Count; i++)
            {
                if (gradients) trained[i].ZeroGrad();
                trained[i].RequiresGrad = requiredGrad[i];
            }
            model.Training = wasTraining;
        }
    }
}
