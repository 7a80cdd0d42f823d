namespace Phi2Native.Backends.Ops.Lora;

/// <summary>The branch's constants: scaling (alpha / r), the input dropout's probability and this forward's mask seed.</summary>
/// <param name="Scaling">The factor of the update, finite.</param>
/// <param name="Dropout">lora_dropout's probability in [0, 1); 0 at inference.</param>
/// <param name="Seed">The mask's seed (DropoutMask's), as LoraLinear derives it per training forward.</param>
internal readonly record struct LoraBranch(double Scaling, double Dropout, ulong Seed);
