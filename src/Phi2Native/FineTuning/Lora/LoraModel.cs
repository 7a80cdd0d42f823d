using Phi2Native.Models;
using Phi2Native.Models.Modules;
using Phi2Native.Models.Phi2;
using Phi2Native.Tensors;

namespace Phi2Native.FineTuning.Lora;

/// <summary>
/// A Phi-2 model with LoRA adapters and fully trained modules attached as a <see cref="LoraConfig"/> (PEFT's rules)
/// selects them. Everything else is frozen, so backward stops below the lowest layer that has anything trainable.
/// </summary>
/// <remarks>
/// Trainable tensors carry their PEFT key as <see cref="PeftKey"/> gives it
/// (<c>base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight</c>, <c>base_model.model.lm_head.weight</c>).
/// Disposing detaches the adapters and restores the modules trained in full, leaving the base model as it was.
/// </remarks>
public sealed class LoraModel : IDisposable
{
    /// <summary>Prefix PEFT gives every key of a causal-LM adapter.</summary>
    public const string KeyPrefix = "base_model.model.";

    private readonly List<LoraLinear> _linear = new();
    private readonly List<LoraEmbedding> _embedding = new();
    private readonly List<Module> _modulesToSave = new();
    private readonly Dictionary<Tensor, Tensor> _originals = new(ReferenceEqualityComparer.Instance);
    private bool _detached;

    private LoraModel(Phi2Model model, LoraConfig config)
    {
        Model = model;
        Config = config;
    }

    /// <summary>The base model (its modules now carry the adapters).</summary>
    public Phi2Model Model { get; }

    /// <summary>The configuration the adapters were made from.</summary>
    public LoraConfig Config { get; }

    /// <summary>LoRA on Linear modules, in model order.</summary>
    public IReadOnlyList<LoraLinear> LinearAdapters => _linear;

    /// <summary>LoRA on Embedding modules.</summary>
    public IReadOnlyList<LoraEmbedding> EmbeddingAdapters => _embedding;

    /// <summary>Leaf modules trained in full (modules_to_save).</summary>
    public IReadOnlyList<Module> ModulesToSave => _modulesToSave;

    /// <summary>
    /// Attaches fresh adapters (PEFT's initialization, reproducible from <paramref name="seed"/>) to the modules
    /// <paramref name="config"/> selects, unfreezes the modules to save and freezes everything else.
    /// </summary>
    /// <exception cref="Phi2Exception">An entry names no module of the model, a layer index is out of range, a target is not a Linear or Embedding, or nothing is selected; the message lists what is valid.</exception>
    public static LoraModel Create(Phi2Model model, LoraConfig config, int seed = 0)
    {
        config.Validate();
        var selection = ModuleSelection.Resolve(model, config);
        RequireFullTrainingDTypes(selection);
        var lora = new LoraModel(model, config);
        // One generator, drawn in checkpoint order, so a seed names the same adapters.
        var random = new Random(seed);
        model.SetRequiresGrad(false);
        foreach (var (module, training) in selection)
        {
            switch (training, module)
            {
                case (ModuleTraining.Full, _):
                    lora._modulesToSave.Add(module);
                    foreach (var parameter in module.Parameters())
                    {
                        lora._originals[parameter] = TensorScope.Detach(parameter.Backend.Cast(parameter, parameter.DType));
                        parameter.RequiresGrad = true;
                    }
                    break;
                case (ModuleTraining.Lora, Linear linear):
                    var adapter = new LoraLinear(linear, config, random);
                    linear.Adapter = adapter;
                    lora._linear.Add(adapter);
                    break;
                case (ModuleTraining.Lora, Embedding embedding):
                    var embeddingAdapter = new LoraEmbedding(embedding, config, random);
                    embedding.Adapter = embeddingAdapter;
                    lora._embedding.Add(embeddingAdapter);
                    break;
            }
        }
        return lora;
    }

    /// <summary>Every trainable tensor: LoRA matrices, then the parameters of the modules trained in full.</summary>
    public IEnumerable<Tensor> TrainableParameters() =>
        _embedding.SelectMany(a => new[] { a.A, a.B })
            .Concat(_linear.SelectMany(a => new[] { a.A, a.B }))
            .Concat(_modulesToSave.SelectMany(m => m.Parameters()));

    /// <summary>The PEFT key of a trainable tensor: LoRA tensors are named with it; a base parameter gets the prefix.</summary>
    public static string PeftKey(Tensor parameter)
    {
        string name = parameter.Name ?? throw new ArgumentException("the tensor has no name", nameof(parameter));
        return name.StartsWith(KeyPrefix, StringComparison.Ordinal) ? name : KeyPrefix + name;
    }

    /// <summary>
    /// Folds the adapters into the base weights (W += scaling B A; E += scaling (B A)^T) and detaches them; the modules
    /// trained in full keep their trained values. The model then computes what the adapted model computed.
    /// </summary>
    /// <exception cref="Phi2Exception">A trainable tensor holds NaN or an infinity (a diverged run): nothing is merged,
    /// the message names the tensor by its PEFT key.</exception>
    public void Merge()
    {
        ThrowIfDetached();
        // Checked before any weight changes: a NaN folded into a weight would make every output of the merged model NaN.
        foreach (var parameter in TrainableParameters())
        {
            float[] values = parameter.ToSingleArray();
            int bad = Array.FindIndex(values, v => !float.IsFinite(v));
            if (bad >= 0)
                throw new Phi2Exception($"cannot merge: {PeftKey(parameter)} [{parameter.ShapeText}] holds {values[bad]} at element {bad}; " +
                                        "the adapter is broken (a diverged run?), and the merged model would compute garbage");
        }
        foreach (var adapter in _linear)
            using (var delta = adapter.Delta()) LoraLinear.AddDelta(adapter.Module.Weight, delta);
        foreach (var adapter in _embedding)
            using (var delta = adapter.Delta()) LoraLinear.AddDelta(adapter.Module.Weight, delta);
        foreach (var original in _originals.Values) original.Dispose();
        _originals.Clear();
        Detach();
    }

    /// <summary>Detaches and frees the adapters and restores the modules trained in full to their original values.</summary>
    public void Dispose()
    {
        if (_detached) return;
        foreach (var (parameter, original) in _originals)
        {
            parameter.Backend.Copy(original, parameter);
            parameter.ZeroGrad();
            original.Dispose();
        }
        _originals.Clear();
        Detach();
    }

    private void Detach()
    {
        foreach (var adapter in _linear) { adapter.Module.Adapter = null; adapter.Dispose(); }
        foreach (var adapter in _embedding) { adapter.Module.Adapter = null; adapter.Dispose(); }
        foreach (var parameter in _modulesToSave.SelectMany(m => m.Parameters())) parameter.RequiresGrad = false;
        _linear.Clear();
        _embedding.Clear();
        _modulesToSave.Clear();
        _detached = true;
    }

    private void ThrowIfDetached()
    {
        if (_detached) throw new ObjectDisposedException(nameof(LoraModel), "the adapters were already merged or removed");
    }

    // LoRA adapters are fp32 whatever the base computes in, but a module trained in full updates its own weights, and
    // AdamW updates fp32 (or fp64) parameters only: over a bf16 base such a module is refused up front.
    private static void RequireFullTrainingDTypes(IEnumerable<(Module Module, ModuleTraining Training)> selection)
    {
        foreach (var (module, _) in selection.Where(s => s.Training == ModuleTraining.Full))
            if (module.Parameters().FirstOrDefault(p => p.DType is not (DType.F32 or DType.F64)) is { } parameter)
                throw new Phi2Exception($"{module.Name} is trained in full (modules_to_save / --full), but its weights are {parameter.DType}: " +
                                        "AdamW keeps fp32 state and updates fp32 parameters only; over a bf16 base train it with LoRA (--target) instead, or fine-tune in f32");
    }
}
