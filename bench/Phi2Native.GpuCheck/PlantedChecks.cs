using Phi2Native.Cuda;
using Phi2Native.DeviceChecks;
using Phi2Native.Tensors;

namespace Phi2Native.GpuCheck;

/// <summary>
/// Checks planted for the self-test (SelfTest.cs): ones that pass, answer wrong, leak or throw, run in the self-test's
/// own process; and a family (<see cref="All"/>, run only as a child: --child-checks self-test --emulated) with a
/// sticky CUDA fault, a crash and a hang, each followed by a check that must still run in a fresh child.
/// </summary>
internal static class PlantedChecks
{
    /// <summary>Passes on any device: uploads three numbers and reads them back.</summary>
    public static DeviceCheck Passes { get; } = new("planted: passes", ["copy"], d => RoundTrip(d, wrong: false, leak: false));

    /// <summary>Reads back what it uploaded but expects something else.</summary>
    public static DeviceCheck Wrong { get; } = new("planted: wrong answer", ["copy"], d => RoundTrip(d, wrong: true, leak: false));

    /// <summary>Passes, but leaves an allocation behind.</summary>
    public static DeviceCheck Leaks { get; } = new("planted: leaks", ["copy"], d => RoundTrip(d, wrong: false, leak: true));

    /// <summary>Makes the emulator throw (a wild free).</summary>
    public static DeviceCheck Throws { get; } = new("planted: throws", ["copy"], d =>
    {
        d.Free(new DevicePtr(0x1000)); // never allocated: the emulator refuses it
        throw new InvalidOperationException("unreachable: the emulator accepted a wild free");
    });

    /// <summary>Throws what the CUDA layer throws after a kernel's illegal address: the context is dead.</summary>
    public static DeviceCheck StickyFault { get; } = new("planted: sticky fault", ["copy"], _ =>
        throw new InvalidOperationException("a launch failed", GpuCheck.StickyFault.Planted()));

    /// <summary>The child family: a fault, a crash and a hang, each followed by a check that must pass in a fresh child.</summary>
    public static IReadOnlyList<DeviceCheck> All { get; } =
    [
        Passes,
        StickyFault,
        Passes with { Name = "planted: after the sticky fault" },
        // SIGKILL rather than an abort: no core dump, whatever the machine's settings.
        new("planted: crash", ["copy"], _ => ChildOnly(() => System.Diagnostics.Process.GetCurrentProcess().Kill())),
        Passes with { Name = "planted: after the crash" },
        new("planted: hang", ["copy"], _ => ChildOnly(() => Thread.Sleep(Timeout.Infinite))),
        Passes with { Name = "planted: after the hang" },
    ];

    /// <summary>Set by a child process of the runner: only there may a planted check crash or hang its process.</summary>
    public static bool InChild { get; set; }

    private static CheckResult ChildOnly(Action act)
    {
        if (!InChild) throw new InvalidOperationException("a planted crash or hang runs only in a child process of the runner");
        act();
        throw new InvalidOperationException("unreachable: the planted crash or hang returned");
    }

    private static CheckResult RoundTrip(IDeviceApi device, bool wrong, bool leak)
    {
        float[] values = [1f, 2f, 3f];
        using var buffer = DeviceBuffer.Upload(device, DType.F32, values);
        if (leak) device.Allocate(256);
        float[] expected = wrong ? [1f, 2f, 4f] : values;
        return CheckResult.Compare("y", buffer.Download(), expected, 0, 0);
    }
}
