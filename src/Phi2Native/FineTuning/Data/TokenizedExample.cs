using Phi2Native.Autograd.Ops;
using Phi2Native.Backends.Ops.Loss;

namespace Phi2Native.FineTuning.Data;

/// <summary>The two forms a JSONL training file may hold; one file holds one form.</summary>
public enum JsonlFormat
{
    /// <summary><c>{"text": "..."}</c>: the loss covers every token.</summary>
    Text,

    /// <summary><c>{"prompt": "...", "completion": "..."}</c>: the loss covers the completion only.</summary>
    PromptCompletion,
}

/// <summary>One training example as token ids, with the labels the loss reads.</summary>
/// <param name="InputIds">[n] token ids; the end-of-text id is the last one when the load appended it.</param>
/// <param name="Labels">
/// [n] equal to <paramref name="InputIds"/> except <see cref="IgnoreLabel"/> where no loss is wanted (a prompt's
/// tokens). Unshifted: the model's loss shifts them, so position t is scored against label t + 1.
/// </param>
/// <param name="LineNumber">The 1-based JSONL line it came from, or 0 when it was made some other way.</param>
public sealed record TokenizedExample(int[] InputIds, int[] Labels, int LineNumber = 0)
{
    /// <summary>The label that excludes a position from the loss (PyTorch's and HF's -100).</summary>
    public const int IgnoreLabel = CrossEntropyOp.DefaultIgnoreIndex;

    /// <summary>Number of tokens.</summary>
    public int Length => InputIds.Length;
}
