using Phi2Native.Autograd;
using Phi2Native.Backends.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Mlp;

/// <summary>An op whose output is gelu_new of a pre-activation it saved for backward (fc1 and its activation).</summary>
internal interface IGeluOutput
{
    /// <summary>The saved pre-activation h, like the output; null when none was saved (the op was not recorded).</summary>
    Tensor? PreActivation { get; }
}

/// <summary>
/// gelu_new's backward folded into the product that makes its output's gradient: the MLP's fc2 computes dg = dY W2 (+ its
/// LoRA branch's dx, already pending, beta 1), and fc1's op then multiplies dg by gelu_new'(h) in a pass of its own
/// (bias_gelu_new_backward: dg and h read, dh written, 3 [N, 10240] passes at Phi-2). With cuBLASLt's DGELU epilogue
/// (aux = h) fc2's dx product writes dh = (dY W2 + pending) gelu_new'(h) itself, and fc1's op takes it as its
/// pre-activation's gradient: no pass, no launch, and dh rounded once where the unfused ops round dg first.
/// Taken only where all of these hold, else nothing changes:
/// <list type="bullet">
/// <item>the CUDA backend, with the device's DGELU known to be gelu_new's derivative times the whole of P, beta C
/// included (<see cref="Phi2Native.Cuda.IBlas.DGeluEpilogueIsGeluNew"/>: the emulator by definition, a GPU by
/// <see cref="DGeluEpilogueProbe"/>);</item>
/// <item>the Linear's input is the output of an <see cref="IGeluOutput"/> op on the tape that saved h;</item>
/// <item>this product is the input's last contribution (every other reader of it ran backward already: a LoRA branch on
/// fc2 runs before its base Linear), and what it writes is the input's whole gradient: the pending buffer it adds into
/// with beta 1, or a fresh one where none is pending (a pending buffer shared with another gradient, which the context
/// would add to after the product, rules it out);</item>
/// <item>the input's width is a multiple of 8 (cuBLASLt's aux leading-dimension rule).</item>
/// </list>
/// </summary>
internal static class GeluGradientFusion
{
    /// <summary>
    /// The pre-activation to fold into the dx product for <paramref name="x"/>, given the gradient pending for it
    /// (<see cref="BackwardContext.PendingGradient"/>), or null where the product must stay plain. After the product, say
    /// so with <see cref="BackwardContext.MarkThroughActivation"/>.
    /// </summary>
    public static Tensor? PreActivationFor(BackwardContext context, Tensor x, Tensor? pending)
    {
        if (x is not { RequiresGrad: true, Backend: CudaBackend cuda } || !cuda.DeviceApi.Blas.DGeluEpilogueIsGeluNew) return null;
        if (context.ProducerOf(x) is not IGeluOutput { PreActivation: { } pre }) return null;
        if (!context.IsLastReader(x) || (pending is null && context.HasGradient(x)) || x.Size(-1) % 8 != 0) return null;
        return pre;
    }

    /// <summary>What a CPU backend says when asked to take a gradient that went through the epilogue: it never makes one.</summary>
    public static NotSupportedException CudaOnly(string op) =>
        new($"{op}: a gradient already through gelu_new's derivative comes only from the CUDA backend's DGELU epilogue (GeluGradientFusion); the CPU backend never makes one");
}
