using System.Collections.Concurrent;
using System.Globalization;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Gpu;
using Phi2Native.Cuda.Resources;
using Phi2Native.DeviceChecks;

namespace Phi2Native.GpuCheck;

/// <summary>
/// The kernel resource table (<see cref="KernelResourceTable"/>): every kernel file compiled by this machine's NVRTC
/// with the engine's options plus ptxas's report, for each architecture; registers, spills, stack and static shared
/// memory from ptxas, tensor-core instructions from cuobjdump's SASS, the block and dynamic shared memory from the
/// launchers at Phi-2's shapes (<see cref="Phi2LaunchShapes"/>), and the theoretical occupancy they give.
/// CI runs it with <c>--check kernels/resources.tsv</c>; a GPU run prints it from the GPU machine's own NVRTC.
/// </summary>
internal static class KernelResources
{
    /// <summary>What a run found, and whether it is acceptable.</summary>
    /// <param name="Compiler">NVRTC's version, as the table's first line names it.</param>
    /// <param name="Rows">Every kernel on every architecture.</param>
    /// <param name="Problems">Spills, occupancy below a floor, shared memory past a limit, kernels without a launch, a stale table.</param>
    public sealed record Outcome(string Compiler, IReadOnlyList<KernelResourceRow> Rows, IReadOnlyList<string> Problems);

    /// <summary>
    /// Builds the table for <paramref name="architectures"/>, prints it (<paramref name="shown"/> rows only) and the
    /// problems, writes or checks <paramref name="tablePath"/>, and ends with one line per architecture, the
    /// reference device's last: <c>NVRTC V compiled F kernel files for sm_90: K kernels, S spilling, M with tensor-core instructions</c>.
    /// Returns 0 when there are no problems, else 1.
    /// </summary>
    public static int Run(IReadOnlyList<GpuArchitecture> architectures, string? tablePath, bool write, bool markdown, TextWriter output)
    {
        string? committed = tablePath is not null && File.Exists(tablePath) ? File.ReadAllText(tablePath) : null;
        if (tablePath is not null && !write && committed is null)
        {
            output.WriteLine($"error: {tablePath} does not exist; make it with --resources --write {tablePath}");
            return 1;
        }
        var floors = committed is null
            ? new Dictionary<(string, string), double>()
            : KernelResourceTable.Parse(committed).Rows.ToDictionary(r => (r.Architecture, r.Kernel), r => r.OccupancyFloor);
        string? cuobjdump = CudaToolLocator.Find(CudaToolLocator.Cuobjdump);
        output.WriteLine(cuobjdump is null
            ? "cuobjdump: not found (PHI2NATIVE_CUDA_TOOLS, PATH, CUDA_HOME, /usr/local/cuda*, venvs, the runner's cuda-tools/): tensor-core instructions are not counted"
            : $"cuobjdump: {cuobjdump}");

        var outcome = Build(architectures, floors, cuobjdump, output);
        var problems = outcome.Problems.ToList();
        string text = KernelResourceTable.Format(outcome.Compiler, outcome.Rows);
        if (tablePath is not null && write)
        {
            string temporary = tablePath + ".tmp";
            File.WriteAllText(temporary, text);
            File.Move(temporary, tablePath, overwrite: true);
            output.WriteLine($"wrote {tablePath} ({outcome.Rows.Count} rows)");
        }
        else if (committed is not null && committed != text)
            problems.Add($"{tablePath} is stale: it differs from what {outcome.Compiler} gives now (below); regenerate it with " +
                         $"--resources --write {tablePath}, and lower a floor there only on purpose\n{Difference(committed, text)}");

        var reference = architectures[0];
        WriteTable(output, outcome.Rows.Where(r => r.Architecture == reference.Name), markdown);
        foreach (string problem in problems) output.WriteLine($"error: {problem}");
        foreach (var architecture in architectures.Reverse())
        {
            var rows = outcome.Rows.Where(r => r.Architecture == architecture.Name).ToList();
            output.WriteLine($"{outcome.Compiler} compiled {rows.Select(r => r.File).Distinct().Count()} kernel files for {architecture.Name}: " +
                             $"{rows.Count} kernels, {rows.Count(r => r.Spills)} spilling, " +
                             (cuobjdump is null ? "? (no cuobjdump) with tensor-core instructions" : $"{rows.Count(r => r.TensorCoreInstructions > 0)} with tensor-core instructions"));
        }
        return problems.Count == 0 ? 0 : 1;
    }

    private static Outcome Build(IReadOnlyList<GpuArchitecture> architectures, IReadOnlyDictionary<(string, string), double> floors,
        string? cuobjdump, TextWriter output)
    {
        var catalog = KernelSourceCatalog.Embedded;
        var compiler = new NvrtcKernelCompiler();
        string version = compiler.Version;
        var rows = new ConcurrentBag<KernelResourceRow>();
        var problems = new ConcurrentBag<string>();
        var launches = Phi2LaunchShapes.ByKernel;
        foreach (var architecture in architectures)
        {
            var options = KernelCache.CompileOptions(architecture.Name).Append(PtxasReport.VerboseOption).ToList();
            Parallel.ForEach(catalog.Files, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount }, file =>
            {
                var compiled = compiler.Compile(file, catalog.SourceOf(file), catalog.Headers, options);
                var entries = PtxasReport.Parse(compiled.Log);
                var tensorCore = cuobjdump is null ? null : TensorCoreCounts(cuobjdump, compiled.Image);
                var missing = KernelSourceCatalog.KernelNames(catalog.SourceOf(file)).Except(entries.Select(e => e.Kernel)).ToList();
                if (missing.Count > 0) problems.Add($"{file} ({architecture.Name}): ptxas reported nothing for {string.Join(", ", missing)}");
                foreach (var entry in entries)
                {
                    if (!launches.TryGetValue(entry.Kernel, out var launch))
                    {
                        problems.Add($"{entry.Kernel} ({file}) has no launch at Phi-2's shapes: add its launcher's call to Phi2LaunchShapes");
                        continue;
                    }
                    int block = (int)launch.Block.Count;
                    var occupancy = Occupancy.Theoretical(architecture, entry.Registers, entry.StaticShared, launch.DynamicSharedBytes, block);
                    double floor = floors.TryGetValue((architecture.Name, entry.Kernel), out double f) ? f : Math.Round(occupancy.Fraction * 100, 1);
                    var row = new KernelResourceRow(architecture.Name, entry.Kernel, file, entry, block, launch.DynamicSharedBytes, occupancy,
                        tensorCore is null ? null : tensorCore.GetValueOrDefault(entry.Kernel), floor);
                    rows.Add(row);
                    if (row.Spills)
                        problems.Add($"{entry.Kernel} spills on {architecture.Name}: {entry.SpillStores} bytes stored, {entry.SpillLoads} loaded ({entry.Registers} registers)");
                    if (row.OccupancyPercent < floor)
                        problems.Add($"{entry.Kernel} reaches {Percent(row.OccupancyPercent)} % occupancy on {architecture.Name}, below its floor of {Percent(floor)} % " +
                                     $"({entry.Registers} registers, {entry.StaticShared} + {launch.DynamicSharedBytes} bytes of shared memory, blocks of {block}; limited by {occupancy.Limit})");
                    if (entry.StaticShared + launch.DynamicSharedBytes > architecture.SharedPerBlockOptIn)
                        problems.Add($"{entry.Kernel} asks for {entry.StaticShared} + {launch.DynamicSharedBytes} bytes of shared memory at Phi-2's shapes, " +
                                     $"past {architecture.Name}'s {architecture.SharedPerBlockOptIn} per block");
                }
            });
        }
        output.WriteLine($"{version}: {catalog.Files.Count} kernel files for {string.Join(", ", architectures.Select(a => a.Name))}");
        return new Outcome(version, [.. rows], [.. problems.Order(StringComparer.Ordinal)]);
    }

    private static IReadOnlyDictionary<string, int> TensorCoreCounts(string cuobjdump, byte[] cubin)
    {
        string path = Path.Combine(Path.GetTempPath(), $"phi2native-{Guid.NewGuid():N}.cubin");
        try
        {
            File.WriteAllBytes(path, cubin);
            return SassReport.TensorCoreInstructions(ToolProcess.Run(cuobjdump, "-sass", path));
        }
        finally
        {
            File.Delete(path);
        }
    }

    private static void WriteTable(TextWriter output, IEnumerable<KernelResourceRow> rows, bool markdown)
    {
        var table = new TextTable("kernel", "file", "registers", "spills (st/ld)", "stack", "static smem", "block", "dynamic smem",
            "blocks/SM", "occupancy %", "limit", "tensor-core instr.", "floor %");
        foreach (var r in rows.OrderBy(r => r.File, StringComparer.Ordinal).ThenBy(r => r.Kernel, StringComparer.Ordinal))
            table.Add(r.Kernel, r.File, Int(r.Ptxas.Registers), $"{r.Ptxas.SpillStores}/{r.Ptxas.SpillLoads}", Int(r.Ptxas.StackFrame),
                Int(r.Ptxas.StaticShared), Int(r.BlockThreads), Int(r.DynamicShared), Int(r.Occupancy.BlocksPerSm), Percent(r.OccupancyPercent),
                r.Occupancy.Limit.ToString().ToLowerInvariant(), r.TensorCoreInstructions is { } n ? Int(n) : "?", Percent(r.OccupancyFloor));
        table.Write(output, markdown);
    }

    // The lines of one text not in the other, marked as a diff would: enough to see what changed.
    private static string Difference(string committed, string now)
    {
        var before = committed.Split('\n').ToHashSet(StringComparer.Ordinal);
        var after = now.Split('\n').ToHashSet(StringComparer.Ordinal);
        var lines = committed.Split('\n').Where(l => !after.Contains(l)).Select(l => "- " + l)
            .Concat(now.Split('\n').Where(l => !before.Contains(l)).Select(l => "+ " + l)).Take(40);
        return string.Join('\n', lines);
    }

    private static string Int(int value) => value.ToString(CultureInfo.InvariantCulture);
    private static string Percent(double value) => value.ToString("0.0", CultureInfo.InvariantCulture);
}
