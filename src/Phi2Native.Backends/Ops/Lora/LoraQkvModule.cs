using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Lora;

/// <summary>One adapted projection of <see cref="LoraQkvOp"/> (q_proj, k_proj or v_proj): its A [r, C], B [C, r] and branch constants.</summary>
/// <param name="A">lora_A [r, C], fp32 (F64 beside an F64 x).</param>
/// <param name="B">lora_B [C, r], of A's dtype.</param>
/// <param name="Branch">Its scaling, dropout and this forward's mask seed (each module its own mask).</param>
internal readonly record struct LoraQkvModule(Tensor A, Tensor B, LoraBranch Branch);
