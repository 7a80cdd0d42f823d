using Phi2Native.Cuda;

namespace Phi2Native.DeviceChecks;

/// <summary>One launch as a launcher asked for it.</summary>
/// <param name="Kernel">The entry point.</param>
/// <param name="Grid">The grid.</param>
/// <param name="Block">The block.</param>
/// <param name="DynamicSharedBytes">The dynamic shared memory.</param>
internal sealed record RecordedLaunchShape(string Kernel, Dim3 Grid, Dim3 Block, int DynamicSharedBytes)
{
    /// <summary>The cost the launcher declared.</summary>
    public Phi2Native.Profiling.KernelCost Cost { get; init; } = Phi2Native.Profiling.KernelCost.Undeclared;
}

/// <summary>
/// A device that only records the shapes of the launches made on it: launchers run their argument checks and pick
/// their shapes, and nothing executes. Pointers handed to launchers are never dereferenced, so made-up aligned
/// addresses serve. Any other device call throws, naming it.
/// </summary>
internal sealed class LaunchRecorder : IDeviceApi
{
    /// <summary>The launches, in order.</summary>
    public List<RecordedLaunchShape> Launches { get; } = [];

    /// <inheritdoc />
    public string Name => "launch recorder";
    public Phi2Native.Tensors.DeviceKind Kind => Phi2Native.Tensors.DeviceKind.Emulated;   // it runs nothing; it stands in for a device in shape tests

    /// <inheritdoc />
    public void Launch(string kernelName, Dim3 grid, Dim3 block, int dynamicSharedBytes, DeviceStream stream, ReadOnlySpan<nint> argPointers,
        in Phi2Native.Profiling.KernelCost cost) =>
        Launches.Add(new RecordedLaunchShape(kernelName, grid, block, dynamicSharedBytes) { Cost = cost });

    private static InvalidOperationException Called(string member) => new($"a launcher called IDeviceApi.{member} on the launch recorder");

    /// <inheritdoc />
    public DeviceMemoryStatistics Memory => throw Called(nameof(Memory));
    /// <inheritdoc />
    public IBlas Blas => throw Called(nameof(Blas));
    /// <inheritdoc />
    public DevicePtr Allocate(long bytes) => throw Called(nameof(Allocate));
    /// <inheritdoc />
    public void Free(DevicePtr pointer) => throw Called(nameof(Free));
    /// <inheritdoc />
    public void CopyToDevice(DevicePtr destination, ReadOnlySpan<byte> source, DeviceStream stream) => throw Called(nameof(CopyToDevice));
    /// <inheritdoc />
    public void CopyToHost(Span<byte> destination, DevicePtr source, DeviceStream stream) => throw Called(nameof(CopyToHost));
    /// <inheritdoc />
    public void CopyOnDevice(DevicePtr destination, DevicePtr source, long bytes, DeviceStream stream) => throw Called(nameof(CopyOnDevice));
    /// <inheritdoc />
    public void Fill(DevicePtr pointer, byte value, long bytes, DeviceStream stream) => throw Called(nameof(Fill));
    /// <inheritdoc />
    public void Synchronize(DeviceStream stream) => throw Called(nameof(Synchronize));
    /// <inheritdoc />
    public DeviceStream CreateStream() => throw Called(nameof(CreateStream));
    /// <inheritdoc />
    public void DestroyStream(DeviceStream stream) => throw Called(nameof(DestroyStream));
    /// <inheritdoc />
    public DeviceEvent RecordEvent(DeviceStream stream) => throw Called(nameof(RecordEvent));
    /// <inheritdoc />
    public float ElapsedMilliseconds(DeviceEvent start, DeviceEvent end) => throw Called(nameof(ElapsedMilliseconds));
    /// <inheritdoc />
    public void DestroyEvent(DeviceEvent deviceEvent) => throw Called(nameof(DestroyEvent));
    /// <inheritdoc />
    public void Dispose() { }
}
