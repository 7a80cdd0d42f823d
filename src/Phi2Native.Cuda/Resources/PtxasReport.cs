using System.Globalization;
using System.Text.RegularExpressions;

namespace Phi2Native.Cuda.Resources;

/// <summary>What ptxas says of one entry point: its registers, spills, stack frame and static shared memory.</summary>
/// <param name="Kernel">The entry point, e.g. <c>attention_bf16</c>.</param>
/// <param name="Registers">Registers per thread.</param>
/// <param name="SpillStores">Bytes stored to local memory because registers ran out.</param>
/// <param name="SpillLoads">Bytes loaded back from those spills.</param>
/// <param name="StackFrame">
/// Bytes of the entry's stack frame: spills plus locals that live in memory (an array indexed at run time, or a
/// library routine's scratch, such as double-precision sincos's 48 bytes in the rotary kernels).
/// </param>
/// <param name="StaticShared">Bytes of <c>__shared__</c> variables, without the 1 KiB the system reserves per block.</param>
internal sealed record PtxasEntry(string Kernel, int Registers, int SpillStores, int SpillLoads, int StackFrame, int StaticShared);

/// <summary>
/// Reads the <c>ptxas info</c> lines NVRTC's log holds when a program is compiled with
/// <c>--ptxas-options=--verbose</c>:
/// <code>
/// ptxas info    : Compiling entry function 'rotary_bf16' for 'sm_90'
/// ptxas info    : Function properties for rotary_bf16
/// ptxas         .     48 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
/// ptxas info    : Used 40 registers, 48 bytes cumulative stack size, 1024 bytes smem
/// </code>
/// "Function properties" also appear for device functions the entry calls (<c>__internal_accurate_pow</c>); only the
/// entry's own count. A "Used" line without an smem part means none.
/// </summary>
internal static partial class PtxasReport
{
    /// <summary>The option that makes NVRTC's log carry the report.</summary>
    public const string VerboseOption = "--ptxas-options=--verbose";

    /// <summary>Every entry point the log reports, in the order ptxas compiled them.</summary>
    /// <exception cref="FormatException">An entry without its "Used" line, or a count that is not a number.</exception>
    public static IReadOnlyList<PtxasEntry> Parse(string log)
    {
        ArgumentNullException.ThrowIfNull(log);
        var entries = new List<PtxasEntry>();
        string? current = null, properties = null;
        int frame = 0, stores = 0, loads = 0;
        foreach (string line in log.Split('\n'))
        {
            if (CompilingEntry().Match(line) is { Success: true } compiling)
            {
                if (current is not null) throw new FormatException($"ptxas reported no 'Used' line for entry '{current}'");
                current = compiling.Groups[1].Value;
                (frame, stores, loads, properties) = (0, 0, 0, null);
            }
            else if (FunctionProperties().Match(line) is { Success: true } props)
                properties = props.Groups[1].Value;
            else if (StackLine().Match(line) is { Success: true } stack && properties == current && current is not null)
                (frame, stores, loads) = (Number(stack, 1), Number(stack, 2), Number(stack, 3));
            else if (UsedLine().Match(line) is { Success: true } used && current is not null)
            {
                int shared = used.Groups[2].Success ? Number(used, 2) : 0;
                entries.Add(new PtxasEntry(current, Number(used, 1), stores, loads, frame, shared));
                current = null;
            }
        }
        if (current is not null) throw new FormatException($"ptxas reported no 'Used' line for entry '{current}'");
        return entries;
    }

    private static int Number(Match match, int group) => int.Parse(match.Groups[group].Value, NumberStyles.None, CultureInfo.InvariantCulture);

    [GeneratedRegex(@"^ptxas info\s*: Compiling entry function '([^']+)'")]
    private static partial Regex CompilingEntry();

    [GeneratedRegex(@"^ptxas info\s*: Function properties for (\S+)")]
    private static partial Regex FunctionProperties();

    [GeneratedRegex(@"^ptxas\s+\.\s+(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")]
    private static partial Regex StackLine();

    [GeneratedRegex(@"^ptxas info\s*: Used (\d+) registers(?:.*?, (\d+) bytes smem)?")]
    private static partial Regex UsedLine();
}
