using System.Globalization;
using System.Text;

namespace Phi2Native.Cuda.Resources;

/// <summary>One kernel's resources on one architecture, and what they allow at Phi-2's shapes.</summary>
/// <param name="Architecture">e.g. <c>sm_90</c>.</param>
/// <param name="Kernel">The entry point.</param>
/// <param name="File">Its kernel file.</param>
/// <param name="Ptxas">Registers, spills, stack frame and static shared memory, as ptxas reports them.</param>
/// <param name="BlockThreads">Threads per block its launcher uses at Phi-2's shapes.</param>
/// <param name="DynamicShared">Dynamic shared memory its launcher asks for at Phi-2's shapes.</param>
/// <param name="Occupancy">The theoretical occupancy those give.</param>
/// <param name="TensorCoreInstructions">HMMA/HGMMA/IMMA... in its SASS; null when no disassembler was at hand.</param>
/// <param name="OccupancyFloor">The occupancy (percent) below which CI fails; set by hand in the table.</param>
internal sealed record KernelResourceRow(string Architecture, string Kernel, string File, PtxasEntry Ptxas, int BlockThreads, int DynamicShared,
    Occupancy Occupancy, int? TensorCoreInstructions, double OccupancyFloor)
{
    /// <summary>The occupancy in percent, rounded to one decimal as the table stores it.</summary>
    public double OccupancyPercent => Math.Round(Occupancy.Fraction * 100, 1);

    /// <summary>Whether ptxas spilled registers to local memory.</summary>
    public bool Spills => Ptxas.SpillStores > 0 || Ptxas.SpillLoads > 0;
}

/// <summary>
/// kernels/resources.tsv: every kernel's registers, spills, stack, shared memory, launch at Phi-2's shapes,
/// theoretical occupancy and tensor-core instruction count, per architecture, as one NVRTC version gives them.
/// Tab-separated with a header; lines starting with <c>#</c> are comments, the first of which names the compiler.
/// CI regenerates it and fails when the committed file differs (stale), when a kernel spills, and when a kernel's
/// occupancy falls below the floor its row records. Only the floor column is written by hand; a new kernel's floor
/// starts at its occupancy.
/// </summary>
internal static class KernelResourceTable
{
    /// <summary>The column names, in order.</summary>
    public static IReadOnlyList<string> Columns { get; } =
    [
        "architecture", "kernel", "file", "registers", "spill_stores", "spill_loads", "stack_frame", "static_shared",
        "block", "dynamic_shared", "blocks_per_sm", "occupancy", "limit", "tensor_core_instructions", "occupancy_floor",
    ];

    private const string CompilerPrefix = "# compiler: ";

    /// <summary>The file's text: a comment naming <paramref name="compiler"/>, the header, then the rows sorted by architecture and kernel.</summary>
    public static string Format(string compiler, IEnumerable<KernelResourceRow> rows)
    {
        var text = new StringBuilder();
        text.Append(CompilerPrefix).Append(compiler).Append('\n');
        text.Append("# Kernel resources at Phi-2's shapes (C 2560, D 80, T 2048, V 51200). Regenerate, do not edit, except the\n");
        text.Append("# occupancy_floor column: bench/gpu-runner/Phi2Native.GpuCheck --resources --write kernels/resources.tsv\n");
        text.Append("# (with .ci/cuda-tools.sh's NVRTC on LD_LIBRARY_PATH). Sizes in bytes; occupancy and floor in percent.\n");
        text.Append(string.Join('\t', Columns)).Append('\n');
        foreach (var row in rows.OrderBy(r => r.Architecture, StringComparer.Ordinal).ThenBy(r => r.Kernel, StringComparer.Ordinal))
        {
            var p = row.Ptxas;
            string[] cells =
            [
                row.Architecture, row.Kernel, row.File, Int(p.Registers), Int(p.SpillStores), Int(p.SpillLoads), Int(p.StackFrame),
                Int(p.StaticShared), Int(row.BlockThreads), Int(row.DynamicShared), Int(row.Occupancy.BlocksPerSm),
                Percent(row.OccupancyPercent), row.Occupancy.Limit.ToString().ToLowerInvariant(),
                row.TensorCoreInstructions is { } n ? Int(n) : "?", Percent(row.OccupancyFloor),
            ];
            text.Append(string.Join('\t', cells)).Append('\n');
        }
        return text.ToString();
    }

    /// <summary>The compiler line and the rows of a table's text.</summary>
    /// <exception cref="FormatException">
    /// The header is not <see cref="Columns"/>, or a row has another number of cells, an architecture without occupancy
    /// figures, or a cell that is not what its column holds (the message gives the line).
    /// </exception>
    public static (string? Compiler, IReadOnlyList<KernelResourceRow> Rows) Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        string? compiler = null;
        var rows = new List<KernelResourceRow>();
        bool header = false;
        int lineNumber = 0;
        foreach (string line in text.Split('\n'))
        {
            lineNumber++;
            if (line.Length == 0) continue;
            if (line.StartsWith(CompilerPrefix, StringComparison.Ordinal)) compiler ??= line[CompilerPrefix.Length..];
            if (line.StartsWith('#')) continue;
            string[] cells = line.Split('\t');
            if (!header)
            {
                if (!cells.SequenceEqual(Columns)) throw new FormatException($"line {lineNumber}: expected the header '{string.Join(' ', Columns)}'");
                header = true;
                continue;
            }
            try
            {
                rows.Add(ParseRow(cells));
            }
            catch (Exception e) when (e is FormatException or ArgumentException)
            {
                throw new FormatException($"line {lineNumber}: {e.Message}", e);
            }
        }
        if (!header) throw new FormatException("no header line: not a kernel resource table");
        return (compiler, rows);
    }

    private static KernelResourceRow ParseRow(string[] cells)
    {
        if (cells.Length != Columns.Count) throw new FormatException($"{cells.Length} cells, expected {Columns.Count}");
        int Cell(int i) => int.TryParse(cells[i], NumberStyles.None, CultureInfo.InvariantCulture, out int v)
            ? v : throw new FormatException($"{Columns[i]} '{cells[i]}' is not a count");
        double PercentCell(int i) =>
            double.TryParse(cells[i], NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double v) && v <= 100
                ? v : throw new FormatException($"{Columns[i]} '{cells[i]}' is not a percentage (0..100)");
        var architecture = GpuArchitecture.Named(cells[0]);
        var ptxas = new PtxasEntry(cells[1], Cell(3), Cell(4), Cell(5), Cell(6), Cell(7));
        int block = Cell(8), blocks = Cell(10);
        if (!Enum.TryParse(cells[12], ignoreCase: true, out OccupancyLimit limit)) throw new FormatException($"limit '{cells[12]}' is not one of {string.Join(", ", Enum.GetNames<OccupancyLimit>())}");
        int warps = blocks * ((block + GpuArchitecture.WarpSize - 1) / GpuArchitecture.WarpSize);
        var occupancy = new Occupancy(blocks, warps, PercentCell(11) / 100, limit);
        int? tensorCore = cells[13] == "?" ? null : Cell(13);
        return new KernelResourceRow(architecture.Name, cells[1], cells[2], ptxas, block, Cell(9), occupancy, tensorCore, PercentCell(14));
    }

    private static string Int(int value) => value.ToString(CultureInfo.InvariantCulture);
    private static string Percent(double value) => value.ToString("0.0", CultureInfo.InvariantCulture);
}
