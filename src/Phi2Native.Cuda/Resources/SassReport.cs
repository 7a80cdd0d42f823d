using System.Text.RegularExpressions;

namespace Phi2Native.Cuda.Resources;

/// <summary>
/// Reads the SASS listing <c>cuobjdump -sass</c> prints for a cubin: for each function, how many of its
/// instructions run on tensor cores (HMMA, HGMMA, IMMA, ...). A kernel that declares tensor-core work but has none of
/// these did not get what its source asked for.
/// </summary>
internal static partial class SassReport
{
    /// <summary>The opcodes (before the first dot) that run on tensor cores, Volta to Hopper.</summary>
    public static IReadOnlySet<string> TensorCoreOpcodes { get; } =
        new HashSet<string>(["HMMA", "HGMMA", "IMMA", "IGMMA", "BMMA", "BGMMA", "DMMA"], StringComparer.Ordinal);

    /// <summary>Tensor-core instructions per function of the listing (functions without any map to 0).</summary>
    public static IReadOnlyDictionary<string, int> TensorCoreInstructions(string listing)
    {
        ArgumentNullException.ThrowIfNull(listing);
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        string? function = null;
        foreach (string line in listing.Split('\n'))
        {
            if (FunctionHeader().Match(line) is { Success: true } header)
            {
                function = header.Groups[1].Value;
                counts.TryAdd(function, 0);
            }
            else if (function is not null && Instruction().Match(line) is { Success: true } instruction &&
                     TensorCoreOpcodes.Contains(instruction.Groups[1].Value))
                counts[function]++;
        }
        return counts;
    }

    [GeneratedRegex(@"^\s*Function\s*:\s*(\S+)")]
    private static partial Regex FunctionHeader();

    // "/*0a30*/   @!P0 HMMA.16816.F32.BF16 R4, R8, R12, R4 ;": the address, an optional predicate, the opcode.
    [GeneratedRegex(@"^\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_]*)")]
    private static partial Regex Instruction();
}
