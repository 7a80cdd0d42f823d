using Phi2Native.Autograd.Ops;
using Phi2Native.Backends.Ops.Lora;
using Phi2Native.Backends.Ops.Projection;
using Phi2Native.Determinism;
using Phi2Native.Models;
using Phi2Native.Models.Modules;
using Phi2Native.Tensors;

namespace Phi2Native.FineTuning.Lora;

/// <summary>
/// LoRA on a Linear, as PEFT computes it: y = W x + b + scaling * B (A dropout(x)), A [r, in], B [out, r].
/// PEFT's init: A kaiming-uniform with a = sqrt(5) (bound 1/sqrt(in)), B = 0, so the adapter starts as a no-op.
/// </summary>
public sealed class LoraLinear : IModuleAdapter, IDisposable
{
    private long _trainingForwards;

    internal LoraLinear(Linear module, LoraConfig config, Random random)
    {
        Module = module;
        Scaling = config.Scaling;
        Dropout = config.Dropout;
        float bound = 1f / MathF.Sqrt(module.InFeatures);
        var a = new float[config.R * module.InFeatures];
        for (int i = 0; i < a.Length; i++) a[i] = (float)((2 * random.NextDouble() - 1) * bound);
        A = Parameter(module.Weight, a, [config.R, module.InFeatures], $"base_model.model.{module.Name}.lora_A.weight");
        B = Parameter(module.Weight, new float[module.OutFeatures * config.R], [module.OutFeatures, config.R], $"base_model.model.{module.Name}.lora_B.weight");
        DropoutSeed = (ulong)random.NextInt64();
    }

    /// <summary>The wrapped module.</summary>
    public Linear Module { get; }

    /// <summary>lora_A [r, in], named with its PEFT key.</summary>
    public Tensor A { get; }

    /// <summary>lora_B [out, r], named with its PEFT key.</summary>
    public Tensor B { get; }

    /// <summary>alpha / r (or alpha / sqrt(r)).</summary>
    public double Scaling { get; }

    /// <summary>lora_dropout on x, training only.</summary>
    public double Dropout { get; }

    /// <summary>Base seed of the dropout masks.</summary>
    public ulong DropoutSeed { get; set; }

    /// <summary>Training forwards run so far (fixes the next dropout mask with <see cref="DropoutSeed"/>; saved in checkpoints).</summary>
    public long TrainingForwardCount
    {
        get => Interlocked.Read(ref _trainingForwards);
        set => Interlocked.Exchange(ref _trainingForwards, value);
    }

    /// <inheritdoc/>
    public Tensor Forward(Tensor input, Tensor baseOutput, bool training)
    {
        // One op (kernels/lora.cu on the CUDA backend: lora_down, lora_up): the mask is regenerated from its seed and,
        // over a bf16 base, the fp32 branch is added in fp32 and rounded once, as AddUpdate does for the unfused ops.
        return LoraOp.Apply(input, baseOutput, A, B, Branch(training));
    }

    /// <summary>
    /// This forward's branch constants: the scaling, and in training the dropout with the next mask's seed (counting the
    /// forward). For the ops that fuse the branch with its base (fc1 and gelu_new: Phi2Mlp).
    /// </summary>
    internal LoraBranch Branch(bool training)
    {
        double dropout = training ? Dropout : 0;
        ulong seed = dropout > 0 ? Seeds.Derive(DropoutSeed, SeedPurpose.LoraInputDropout, Interlocked.Increment(ref _trainingForwards)) : 0;
        return new LoraBranch(Scaling, dropout, seed);
    }

    /// <summary>
    /// <paramref name="projection"/>'s adapter as one module of LoraQkvOp (the branches of q_proj, k_proj and v_proj over
    /// one fused [..., 3 C] projection), counting a training forward as <see cref="Forward"/> does; null without a LoRA
    /// adapter. A merged adapter is detached, so it is null too.
    /// </summary>
    internal static LoraQkvModule? QkvModule(Linear projection, bool training) =>
        projection.Adapter is LoraLinear lora ? new LoraQkvModule(lora.A, lora.B, lora.Branch(training)) : null;

    /// <summary>
    /// baseOutput + update. When the base computes in another dtype than the adapter (a bf16 base, an fp32 adapter) the
    /// sum is taken in the adapter's dtype (widening the base output is exact) and rounded to the base's dtype once,
    /// rather than rounding the update to bf16 and rounding again in a bf16 add; the gradients are the same either way.
    /// </summary>
    internal static Tensor AddUpdate(Tensor baseOutput, Tensor update)
    {
        if (baseOutput.DType == update.DType) return AddOp.Apply(baseOutput, update);
        return CastOp.Apply(AddOp.Apply(CastOp.Apply(baseOutput, update.DType), update), baseOutput.DType);
    }

    /// <summary><paramref name="delta"/> (the adapter's dtype) added into <paramref name="weight"/>, rounded to the weight's dtype when it differs.</summary>
    internal static void AddDelta(Tensor weight, Tensor delta)
    {
        if (delta.DType == weight.DType) { weight.Backend.AddInPlace(weight, delta); return; }
        using var cast = weight.Backend.Cast(delta, weight.DType);
        weight.Backend.AddInPlace(weight, cast);
    }

    /// <summary>scaling * B A [out, in]: what merging adds to the weight.</summary>
    public Tensor Delta()
    {
        var backend = A.Backend;
        using var aTransposed = backend.Transpose(A);                                    // [in, r]
        var delta = LinearOp.Forward(B, aTransposed, null);                                 // B (A^T)^T = B A
        backend.ScaleInPlace(delta, Scaling);
        return delta;
    }

    /// <summary>Frees A and B.</summary>
    public void Dispose()
    {
        A.Dispose();
        B.Dispose();
    }

    /// <summary>A trainable tensor in fp32, as PEFT trains adapters (fp64 when the base computes in fp64, for gradient checks).</summary>
    internal static Tensor Parameter(Tensor baseWeight, float[] values, int[] shape, string name)
    {
        var dtype = baseWeight.DType == DType.F64 ? DType.F64 : DType.F32;
        var tensor = TensorScope.Detach(baseWeight.Backend.FromBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()), DType.F32, shape, dtype));
        tensor.Name = name;
        tensor.RequiresGrad = true;
        return tensor;
    }
}
