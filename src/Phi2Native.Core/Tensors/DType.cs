namespace Phi2Native.Tensors;

/// <summary>Element type of a tensor.</summary>
/// <remarks>
/// The CPU backend computes in <see cref="F32"/> (and <see cref="F64"/> for gradient checks);
/// <see cref="F16"/> and <see cref="BF16"/> are storage types that are widened before compute.
/// The CUDA backend keeps frozen weights and activations in <see cref="BF16"/>.
/// </remarks>
public enum DType
{
    /// <summary>IEEE 754 binary32.</summary>
    F32,
    /// <summary>IEEE 754 binary64; CPU backend only, for finite-difference gradient checks.</summary>
    F64,
    /// <summary>IEEE 754 binary16.</summary>
    F16,
    /// <summary>bfloat16: the upper 16 bits of a binary32.</summary>
    BF16,
    /// <summary>32-bit signed integer (token ids, targets).</summary>
    I32,
}

/// <summary>Sizes, names and conversions of <see cref="DType"/>.</summary>
public static class DTypes
{
    /// <summary>Bytes one element takes.</summary>
    public static int SizeInBytes(this DType dtype) => dtype switch
    {
        DType.F32 or DType.I32 => 4,
        DType.F64 => 8,
        DType.F16 or DType.BF16 => 2,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown dtype"),
    };

    /// <summary>True for the floating-point types.</summary>
    public static bool IsFloatingPoint(this DType dtype) => dtype != DType.I32;

    /// <summary>The dtype's name in a safetensors header ("F32", "BF16", ...).</summary>
    public static string SafeTensorsName(this DType dtype) => dtype switch
    {
        DType.F32 => "F32",
        DType.F64 => "F64",
        DType.F16 => "F16",
        DType.BF16 => "BF16",
        DType.I32 => "I32",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown dtype"),
    };

    /// <summary>Parses a safetensors dtype name; false for the names this engine does not read (I8, U8, F8_*, ...).</summary>
    public static bool TryParseSafeTensorsName(string name, out DType dtype)
    {
        switch (name)
        {
            case "F32": dtype = DType.F32; return true;
            case "F64": dtype = DType.F64; return true;
            case "F16": dtype = DType.F16; return true;
            case "BF16": dtype = DType.BF16; return true;
            case "I32": dtype = DType.I32; return true;
            default: dtype = default; return false;
        }
    }

    /// <summary>bfloat16 bits to float (exact).</summary>
    public static float BFloat16ToSingle(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    /// <summary>float to bfloat16 bits, rounding to nearest even (as PyTorch does); NaN stays NaN.</summary>
    public static ushort SingleToBFloat16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value)) return (ushort)((bits >> 16) | 0x40);
        uint roundingBias = 0x7FFF + ((bits >> 16) & 1);
        return (ushort)((bits + roundingBias) >> 16);
    }

    /// <summary>
    /// Widens destination.Length elements of <paramref name="source"/> (raw little-endian bytes of
    /// <paramref name="sourceType"/>) into <paramref name="destination"/>.
    /// </summary>
    public static void WidenToSingle(ReadOnlySpan<byte> source, DType sourceType, Span<float> destination)
    {
        int count = destination.Length;
        switch (sourceType)
        {
            case DType.F32:
                System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(source[..(count * 4)]).CopyTo(destination);
                break;
            case DType.F64:
                var doubles = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, double>(source[..(count * 8)]);
                for (int i = 0; i < count; i++) destination[i] = (float)doubles[i];
                break;
            case DType.F16:
                var halves = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, Half>(source[..(count * 2)]);
                System.Numerics.Tensors.TensorPrimitives.ConvertToSingle(halves, destination);
                break;
            case DType.BF16:
                var bf = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(source[..(count * 2)]);
                for (int i = 0; i < count; i++) destination[i] = BFloat16ToSingle(bf[i]);
                break;
            default:
                throw new ArgumentException($"cannot widen {sourceType} to F32: it is not a floating-point type", nameof(sourceType));
        }
    }
}
