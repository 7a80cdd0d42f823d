using Phi2Native.Cuda;
using Phi2Native.Cuda.Emulator;
using Phi2Native.DeviceChecks;

namespace Phi2Native.GpuCheck;

/// <summary>
/// The runner as a child of itself (the hidden options --child-checks and --child-bench): it runs its share of the
/// cases on a device of its own and writes one <see cref="ChildRecord"/> line per case event on standard output, for
/// the parent's <see cref="ChildSupervisor"/>. A fault here costs this process, not the run.
/// </summary>
internal static class ChildMain
{
    /// <summary>The family name of the self-test's planted checks, known to children only.</summary>
    public const string PlantedFamily = "self-test";

    /// <summary>
    /// The checks of <paramref name="families"/> (comma-separated names) whose name contains <paramref name="filter"/>,
    /// in catalog order: what the parent and its children both compute, so an index means the same check in both.
    /// </summary>
    /// <exception cref="ArgumentException">A family name that does not exist.</exception>
    public static IReadOnlyList<DeviceCheck> SelectChecks(string families, string? filter)
    {
        var known = DeviceCheckCatalog.Families.Append(new DeviceCheckFamily(PlantedFamily, PlantedChecks.All)).ToDictionary(f => f.Name, StringComparer.Ordinal);
        var checks = new List<DeviceCheck>();
        foreach (string name in families.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (!known.TryGetValue(name, out var family)) throw new ArgumentException($"no device check family is named '{name}'");
            checks.AddRange(family.Checks.Where(c => Matches(c, filter)));
        }
        return checks;
    }

    /// <summary>Whether --filter <paramref name="filter"/> selects <paramref name="check"/> (its name contains it, ignoring case).</summary>
    public static bool Matches(DeviceCheck check, string? filter) =>
        filter is null || check.Name.Contains(filter, StringComparison.OrdinalIgnoreCase);

    /// <summary>Runs the child's checks from <see cref="RunnerOptions.From"/> on; returns 0 once every one has its record.</summary>
    public static int RunChecks(RunnerOptions options, TextWriter output)
    {
        PlantedChecks.InChild = true;
        var checks = SelectChecks(options.ChildChecks!, options.Filter).Skip(options.From).ToList();
        var deadline = Deadline.After(options.TimeLimit);
        var writer = new ChildProtocol.Writer<CheckOutcome>(output, ChildRecord.Of);
        if (options.Emulated)
        {
            // A fresh device per check, as the NUnit fixture makes one: a check cannot inherit another's state.
            CheckRunner.RunAll(checks, () => new EmulatedDevice(), d => d.Dispose(), deadline, writer);
            return 0;
        }
        // One device (one context) for the child's checks; if it cannot be opened, every check says why.
        var device = GpuDevices.TryOpen(out string reason);
        Func<IDeviceApi> acquire = device is null
            ? () => throw new InvalidOperationException($"the child could not open the GPU: {reason}")
            : () => device;
        CheckRunner.RunAll(checks, acquire, _ => { }, deadline, writer);
        CloseQuietly(device);
        return 0;
    }

    /// <summary>Runs the benchmark cases from <see cref="RunnerOptions.From"/> on; returns 0 once every one has its record.</summary>
    public static int RunBenchmarks(RunnerOptions options, TextWriter output)
    {
        var deadline = Deadline.After(options.TimeLimit);
        var writer = new ChildProtocol.Writer<BenchOutcome>(output, ChildRecord.Of);
        string reason = "";
        IDeviceApi? device = options.Emulated ? new EmulatedDevice() : GpuDevices.TryOpen(out reason);
        if (device is null)
        {
            // No device: every case says why (Threw: a GPU was there when the parent looked).
            var names = Benchmarks.CaseNames.Skip(options.From).ToList();
            for (int i = 0; i < names.Count; i++)
                writer.Finished(i, names[i], new BenchOutcome(names[i], "-", "-", BenchStatus.Threw, 0, 0, "", 0, $"the child could not open the GPU: {reason}"), null);
            return 0;
        }
        Benchmarks.RunAll(device, options.BenchSizes, options.From, deadline, writer);
        CloseQuietly(device);
        return 0;
    }

    private static void CloseQuietly(IDeviceApi? device)
    {
        try
        {
            device?.Dispose();
        }
        catch (Exception)
        {
            // After a sticky fault the context cannot be destroyed cleanly; every record is already out.
        }
    }
}
