using Phi2Native.Backends.Ops.Lora;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Qkv;

/// <summary>
/// A layer's q_proj, k_proj and v_proj weights ([C, C] each) and biases ([C] each), in that order. In the model they
/// are row blocks of one [3C, C] weight and one [3C] bias (<see cref="WeightsFused"/>, <see cref="BiasesFused"/>), which
/// one GEMM multiplies; any three tensors of the shapes serve, at one GEMM each. <see cref="Adapters"/>: LoRA branches
/// of the projections (LoraQkvOp's modules, q, k, v), added to the [N, 3C] product before the head split.
/// </summary>
internal sealed record QkvParameters(Tensor[] Weights, Tensor[] Biases)
{
    /// <summary>The projections' names, for messages: q_proj, k_proj, v_proj.</summary>
    public static readonly string[] Names = ["q_proj", "k_proj", "v_proj"];

    /// <summary>Whether the three weights follow one another in one block of memory: one [3C, C] matrix.</summary>
    public bool WeightsFused => Weights[0].Precedes(Weights[1]) && Weights[1].Precedes(Weights[2]);

    /// <summary>Whether the three biases follow one another in one block of memory: one [3C] vector.</summary>
    public bool BiasesFused => Biases[0].Precedes(Biases[1]) && Biases[1].Precedes(Biases[2]);

    /// <summary>The LoRA modules of q_proj, k_proj and v_proj (3 slots, null where a projection has none), or null for none.</summary>
    public LoraQkvModule?[]? Adapters { get; init; }

    /// <summary>Whether any projection carries a LoRA module.</summary>
    public bool Adapted => Adapters is { } adapters && adapters.Any(module => module is not null);

    /// <summary>The adapters' A and B of q, k, v in that order (null where absent): inputs of the op, so the tape delivers their gradients.</summary>
    public Tensor?[] AdapterTensors => Adapters is { } adapters ? [.. adapters.SelectMany(module => new[] { module?.A, module?.B })] : [];
}

/// <summary>The head split and rotary of the q/k/v projection: H heads of D dims, the first <paramref name="RotaryDim"/> of each rotated with <paramref name="Theta"/>.</summary>
internal readonly record struct QkvShape(int Heads, int HeadDim, int RotaryDim, double Theta);
