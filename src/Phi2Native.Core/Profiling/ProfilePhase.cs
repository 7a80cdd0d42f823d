namespace Phi2Native.Profiling;

/// <summary>Which part of a step a recorded launch serves (set by the model, the tape and the trainer through <see cref="ProfileScope"/>).</summary>
public enum ProfilePhase
{
    /// <summary>No phase was open: setup, loading, host reads between steps.</summary>
    None,

    /// <summary>The forward pass (prefill and decode are forward passes too).</summary>
    Forward,

    /// <summary>The backward pass: the gradient tape running each op's backward.</summary>
    Backward,

    /// <summary>The optimizer: gradient clipping and the AdamW update.</summary>
    Optimizer,
}
