using NUnit.Framework;
using Phi2Native.Cuda;

namespace Phi2Native.Tests.Support;

/// <summary>One launch as <see cref="RecordingDevice"/> saw it: the pointers and scalars only when a layout was given.</summary>
internal sealed record RecordedLaunch(string Kernel, Dim3 Grid, Dim3 Block, int SharedBytes, DevicePtr[] Pointers, object[] Scalars);

/// <summary>
/// A device for launcher tests: it records launches instead of running them (and, when allowed, device-to-device
/// copies) and fails the test on every other call, so a test can pin launch shapes and arguments, or show that a
/// launcher with nothing to do touches the device not at all. The addresses it is given are never dereferenced.
/// </summary>
/// <param name="allowLaunches">False: any launch fails the test (the "launches nothing" tests).</param>
/// <param name="allowCopies">True: CopyOnDevice is recorded in <see cref="Calls"/> instead of failing.</param>
/// <param name="layout">
/// For decoding each launch's arguments (which point at the launcher's locals, gone after the call): the number of
/// leading pointer parameters and a reader per scalar parameter, by kernel name. Null records shapes only.
/// </param>
internal sealed unsafe class RecordingDevice(bool allowLaunches = true, bool allowCopies = false,
    Func<string, (int Pointers, Func<nint, object>[] Scalars)>? layout = null) : IDeviceApi
{
    /// <summary>Every recorded call in order: "launch NAME" or "copy N bytes 0xS -> 0xD".</summary>
    public List<string> Calls { get; } = [];

    /// <summary>The launches, in order.</summary>
    public List<RecordedLaunch> Launches { get; } = [];

    /// <summary>Kernel, grid and block of each launch, the part most tests pin.</summary>
    public IEnumerable<(string Kernel, Dim3 Grid, Dim3 Block)> Shapes => Launches.Select(l => (l.Kernel, l.Grid, l.Block));

    /// <summary>Forgets what was recorded.</summary>
    public void Clear()
    {
        Calls.Clear();
        Launches.Clear();
    }

    private static AssertionException Called(string call) => new($"the launcher called IDeviceApi.{call}");

    public string Name => "recording";
    // It stands in for the emulated device in launcher tests; nothing above the launchers sees it.
    public Phi2Native.Tensors.DeviceKind Kind => Phi2Native.Tensors.DeviceKind.Emulated;
    public DeviceMemoryStatistics Memory => throw Called(nameof(Memory));
    public IBlas Blas => throw Called(nameof(Blas));
    public DevicePtr Allocate(long bytes) => throw Called(nameof(Allocate));
    public void Free(DevicePtr pointer) => throw Called(nameof(Free));
    public void CopyToDevice(DevicePtr destination, ReadOnlySpan<byte> source, DeviceStream stream) => throw Called(nameof(CopyToDevice));
    public void CopyToHost(Span<byte> destination, DevicePtr source, DeviceStream stream) => throw Called(nameof(CopyToHost));
    public void Fill(DevicePtr pointer, byte value, long bytes, DeviceStream stream) => throw Called(nameof(Fill));

    public void CopyOnDevice(DevicePtr destination, DevicePtr source, long bytes, DeviceStream stream)
    {
        if (!allowCopies) throw Called(nameof(CopyOnDevice));
        Calls.Add($"copy {bytes} bytes 0x{source.Address:x} -> 0x{destination.Address:x}");
    }

    public void Launch(string kernelName, Dim3 grid, Dim3 block, int dynamicSharedBytes, DeviceStream stream, ReadOnlySpan<nint> argPointers) =>
        Launch(kernelName, grid, block, dynamicSharedBytes, stream, argPointers, Phi2Native.Profiling.KernelCost.Undeclared);

    public void Launch(string kernelName, Dim3 grid, Dim3 block, int dynamicSharedBytes, DeviceStream stream, ReadOnlySpan<nint> argPointers,
        in Phi2Native.Profiling.KernelCost cost)
    {
        if (!allowLaunches) throw Called($"{nameof(Launch)}({kernelName})");
        DevicePtr[] pointers = [];
        object[] scalars = [];
        if (layout is not null)
        {
            // Each kernel's parameters: its pointers first, then its scalars, as the kernel files declare them.
            var (pointerCount, readers) = layout(kernelName);
            Assert.That(argPointers.Length, Is.EqualTo(pointerCount + readers.Length), kernelName);
            pointers = new DevicePtr[pointerCount];
            for (int i = 0; i < pointerCount; i++) pointers[i] = *(DevicePtr*)argPointers[i];
            scalars = new object[readers.Length];
            for (int i = 0; i < readers.Length; i++) scalars[i] = readers[i](argPointers[pointerCount + i]);
        }
        Calls.Add("launch " + kernelName);
        Launches.Add(new RecordedLaunch(kernelName, grid, block, dynamicSharedBytes, pointers, scalars));
    }

    public void Synchronize(DeviceStream stream) => throw Called(nameof(Synchronize));
    public DeviceStream CreateStream() => throw Called(nameof(CreateStream));
    public void DestroyStream(DeviceStream stream) => throw Called(nameof(DestroyStream));
    public DeviceEvent RecordEvent(DeviceStream stream) => throw Called(nameof(RecordEvent));
    public float ElapsedMilliseconds(DeviceEvent start, DeviceEvent end) => throw Called(nameof(ElapsedMilliseconds));
    public void DestroyEvent(DeviceEvent deviceEvent) => throw Called(nameof(DestroyEvent));
    public void Dispose() { }
}
