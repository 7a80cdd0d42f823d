using Phi2Native.Autograd.Ops;
using Phi2Native.Backends.Ops.Embeddings;
using Phi2Native.Backends.Ops.Projection;
using Phi2Native.Models;
using Phi2Native.Models.Modules;
using Phi2Native.Tensors;

namespace Phi2Native.FineTuning.Lora;

/// <summary>
/// LoRA on an Embedding, as PEFT computes it: y = E[ids] + scaling * (A^T[ids]) B^T, with lora_embedding_A [r, V]
/// and lora_embedding_B [C, r]; no dropout. PEFT's init: A = 0, B ~ N(0, 1).
/// </summary>
public sealed class LoraEmbedding : IModuleAdapter, IDisposable
{
    internal LoraEmbedding(Embedding module, LoraConfig config, Random random)
    {
        Module = module;
        Scaling = config.Scaling;
        int vocab = module.Weight.Size(0), channels = module.Weight.Size(1);
        var b = new float[channels * config.R];
        for (int i = 0; i < b.Length; i++) b[i] = (float)RandomWeights.Gaussian(random);
        A = LoraLinear.Parameter(module.Weight, new float[config.R * vocab], [config.R, vocab], $"base_model.model.{module.Name}.lora_embedding_A");
        B = LoraLinear.Parameter(module.Weight, b, [channels, config.R], $"base_model.model.{module.Name}.lora_embedding_B");
    }

    /// <summary>The wrapped module.</summary>
    public Embedding Module { get; }

    /// <summary>lora_embedding_A [r, V], named with its PEFT key.</summary>
    public Tensor A { get; }

    /// <summary>lora_embedding_B [C, r], named with its PEFT key.</summary>
    public Tensor B { get; }

    /// <summary>alpha / r (or alpha / sqrt(r)).</summary>
    public double Scaling { get; }

    /// <inheritdoc/>
    public Tensor Forward(Tensor input, Tensor baseOutput, bool training)
    {
        var rows = EmbeddingOp.Apply(TransposeOp.Apply(A), input);                      // A^T [V, r] at ids -> [..., r]
        var update = LinearOp.Apply(rows, B, null);                                      // [..., r] B^T -> [..., C]
        return LoraLinear.AddUpdate(baseOutput, ScaleOp.Apply(update, Scaling));
    }

    /// <summary>scaling * (B A)^T [V, C]: what merging adds to the embedding table.</summary>
    public Tensor Delta()
    {
        var backend = A.Backend;
        using var aTransposed = backend.Transpose(A);                                    // [V, r]
        var delta = LinearOp.Forward(aTransposed, B, null);                                 // A^T B^T = (B A)^T
        backend.ScaleInPlace(delta, Scaling);
        return delta;
    }

    /// <summary>Frees A and B.</summary>
    public void Dispose()
    {
        A.Dispose();
        B.Dispose();
    }
}
