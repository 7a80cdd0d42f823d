namespace Phi2Native.Tensors;

/// <summary>
/// An op family as the backends see it: its name and the dtypes each kind of backend computes it in. Each op declares
/// one (in src/Phi2Native.Backends/Ops); <see cref="IBackend.Supports"/> reads it, so "may this run in bf16 here" has
/// one answer per op, written beside the op.
/// </summary>
/// <param name="Name">The op, as its autograd op, kernels and errors name it (e.g. <c>LayerNorm</c>).</param>
/// <param name="CpuDTypes">What the CPU backend computes it in (F32, and F64 for gradient checks).</param>
/// <param name="CudaDTypes">What the CUDA backend computes it in.</param>
public sealed record BackendOp(string Name, IReadOnlyList<DType> CpuDTypes, IReadOnlyList<DType> CudaDTypes)
{
    /// <summary>The CPU backend's usual dtypes: it computes in fp32, and in fp64 for gradient checks.</summary>
    public static IReadOnlyList<DType> CpuFloats { get; } = [DType.F32, DType.F64];

    /// <summary>The dtypes a <paramref name="kind"/> backend computes this op in.</summary>
    public IReadOnlyList<DType> DTypesOn(DeviceKind kind) => kind == DeviceKind.Cpu ? CpuDTypes : CudaDTypes;

    /// <summary>Whether a <paramref name="kind"/> backend computes this op in <paramref name="dtype"/>.</summary>
    public bool Supports(DeviceKind kind, DType dtype) => DTypesOn(kind).Contains(dtype);

    /// <summary>Throws unless <paramref name="tensor"/>'s backend computes this op in its dtype.</summary>
    /// <exception cref="NotSupportedException">It does not; the message names the op, the argument and what would do.</exception>
    public void RequireSupported(Tensor tensor, string argument)
    {
        var kind = tensor.Device.Kind;
        if (!Supports(kind, tensor.DType))
            throw new NotSupportedException(
                $"{Name}: {argument} is {tensor.DType}; the {(kind == DeviceKind.Cpu ? "CPU" : "CUDA")} backend computes it in {string.Join(" or ", DTypesOn(kind))}");
    }
}
