using Phi2Native.Tensors;

namespace Phi2Native.Backends.Cuda;

/// <summary>
/// Entry point names of kernels/*.cu: <c>{op}_{dtype}</c>, <c>{op}_backward_{dtype}</c> and, for casts,
/// <c>cast_{from}_{to}</c>, with dtype one of <c>f32</c>, <c>bf16</c>, <c>f16</c>.
/// </summary>
internal static class KernelName
{
    /// <summary>The dtype's suffix in kernel names: <c>f32</c>, <c>bf16</c> or <c>f16</c>.</summary>
    /// <exception cref="ArgumentException"><paramref name="dtype"/> has no kernels (F64, I32).</exception>
    public static string Suffix(DType dtype) => dtype switch
    {
        DType.F32 => "f32",
        DType.BF16 => "bf16",
        DType.F16 => "f16",
        _ => throw new ArgumentException($"no kernel takes {dtype} data (F32, BF16 or F16)", nameof(dtype)),
    };

    /// <summary>
    /// <c>{op}_{dtype}</c>, refusing a dtype the kernel file does not instantiate (<paramref name="supported"/>), so a
    /// wrong dtype fails here with the op's name instead of as "no kernel named ..." at launch.
    /// </summary>
    public static string For(string op, DType dtype, params ReadOnlySpan<DType> supported)
    {
        if (!supported.Contains(dtype))
            throw new ArgumentException($"{op} has no {dtype} kernel (it has {string.Join(", ", supported.ToArray())})", nameof(dtype));
        return op + "_" + Suffix(dtype);
    }
}
