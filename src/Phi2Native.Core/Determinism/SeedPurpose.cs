namespace Phi2Native.Determinism;

/// <summary>
/// What a derived seed is for; each purpose has its own rule in <see cref="Seeds.Derive"/>. The rules are the ones runs
/// and checkpoints were made with, kept bit for bit: a seed names the same run, and a checkpoint resumes with the same
/// dropout masks. Add a purpose for a new use; never change a rule.
/// </summary>
internal enum SeedPurpose
{
    /// <summary>The model's dropout base seed (<c>Phi2Model.DropoutSeed</c>) from a run's seed: seed * 0x9E3779B97F4A7C15 + 1. Index 0.</summary>
    ModelDropout,

    /// <summary>
    /// A Linear LoRA adapter's dropout base seed from the model's dropout base seed: seed ^ ((index + 1) &lt;&lt; 32), index
    /// the adapter's position among the LoRA model's Linear adapters.
    /// </summary>
    AdapterDropout,

    /// <summary>One training forward's seed from the model's dropout base seed: Mix(seed, index), index the forward's
    /// 1-based count since the base seed was set (saved in checkpoints).</summary>
    TrainingForward,

    /// <summary>The embedding dropout (embd_pdrop) of one training forward, from its seed: Mix(seed, 2^64 - 1). Index 0.</summary>
    EmbeddingDropout,

    /// <summary>Layer <c>index</c>'s residual dropout on the attention branch, from the training forward's seed: Mix(seed, index).</summary>
    AttentionResidualDropout,

    /// <summary>Layer <c>index</c>'s residual dropout on the MLP branch, from the training forward's seed:
    /// Mix(seed, index) ^ 0x5DEECE66D (the attention branch's seed with bits flipped).</summary>
    MlpResidualDropout,

    /// <summary>A LoRA adapter's dropout on its input in one training forward, from the adapter's dropout base seed:
    /// seed + index * 0x9E3779B97F4A7C15, index the adapter's 1-based count of training forwards (saved in checkpoints).</summary>
    LoraInputDropout,

    /// <summary>The generator state that shuffles epoch <c>index</c> of a data order, from the order's seed:
    /// SplitMix64's finalizer over seed ^ (index * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019).</summary>
    EpochShuffle,

    /// <summary>The sampling seed of row <c>index</c> of a batched generation, from the generation's seed: seed + index.</summary>
    SamplingRow,
}
