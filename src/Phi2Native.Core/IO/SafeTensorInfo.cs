using Phi2Native.Tensors;

namespace Phi2Native.IO;

/// <summary>One tensor entry of a safetensors header, validated against the file it came from.</summary>
/// <param name="Name">The tensor's key in the header, e.g. <c>model.layers.0.mlp.fc1.weight</c>.</param>
/// <param name="DTypeName">The dtype exactly as the file spells it ("F16", "BF16", "U8", "F8_E4M3", ...).</param>
/// <param name="DType">
/// The engine's dtype, or null for a dtype the engine does not compute with (BOOL, U8, I8, I16, U16, U32,
/// I64, U64, F8_E4M3, F8_E5M2). Such tensors are size-checked and listed, and their raw bytes can be read,
/// but typed reads refuse them.
/// </param>
/// <param name="Shape">Dimensions, outermost first; empty for a scalar. Shared with the file object: do not modify.</param>
/// <param name="ElementCount">Product of <paramref name="Shape"/> (1 for a scalar, 0 when any dimension is 0).</param>
/// <param name="DataBegin">First byte of the tensor, relative to the start of the data section (just after the header).</param>
/// <param name="DataEnd">One past the last byte, relative to the start of the data section.</param>
public sealed record SafeTensorInfo(
    string Name,
    string DTypeName,
    DType? DType,
    long[] Shape,
    long ElementCount,
    long DataBegin,
    long DataEnd)
{
    /// <summary>Size of the tensor's data in bytes (<see cref="DataEnd"/> - <see cref="DataBegin"/>).</summary>
    public long ByteLength => DataEnd - DataBegin;

    /// <summary>Shape as text, e.g. <c>[2560, 10240]</c>, for error messages and listings.</summary>
    public string ShapeText => "[" + string.Join(", ", Shape) + "]";
}

/// <summary>The safetensors dtype names and their element sizes, including the ones the engine only lists.</summary>
internal static class SafeTensorsDTypes
{
    // Every dtype a safetensors file may carry and its element size in bytes. The engine computes with a
    // subset (see DTypes.TryParseSafeTensorsName); the rest must still be sized so that a checkpoint with,
    // say, a U8 mask or an I64 position buffer validates and lists instead of failing to open.
    private static readonly Dictionary<string, int> s_sizes = new(StringComparer.Ordinal)
    {
        ["BOOL"] = 1,
        ["U8"] = 1,
        ["I8"] = 1,
        ["F8_E4M3"] = 1,
        ["F8_E5M2"] = 1,
        ["I16"] = 2,
        ["U16"] = 2,
        ["F16"] = 2,
        ["BF16"] = 2,
        ["I32"] = 4,
        ["U32"] = 4,
        ["F32"] = 4,
        ["I64"] = 8,
        ["U64"] = 8,
        ["F64"] = 8,
    };

    /// <summary>Element size of a safetensors dtype name; false for a name the format does not define.</summary>
    public static bool TryGetSize(string name, out int size) => s_sizes.TryGetValue(name, out size);

    /// <summary>The names accepted, for error messages.</summary>
    public static string KnownNames => string.Join(", ", s_sizes.Keys);
}
