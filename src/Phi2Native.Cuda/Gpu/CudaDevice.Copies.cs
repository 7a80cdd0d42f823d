using Phi2Native.Profiling;

namespace Phi2Native.Cuda.Gpu;

// Copies between managed memory and the device, through the pinned staging buffers (see StagedCopy).
public sealed partial class CudaDevice
{
    private readonly object _stagingGate = new();
    private PinnedStagingBuffers? _staging;

    /// <inheritdoc />
    /// <remarks>
    /// Staged in chunks through a page-locked buffer and copied asynchronously on <paramref name="stream"/>: it returns
    /// once the last chunk is staged, so <paramref name="source"/> may be reused at once while the device copy still runs.
    /// </remarks>
    internal void CopyToDevice(DevicePtr destination, ReadOnlySpan<byte> source, DeviceStream stream)
    {
        Enter();
        CheckStream(stream, nameof(stream));
        if (source.IsEmpty) return;
        CheckPointer(destination, nameof(destination));
        lock (_stagingGate) StagedCopy.ToDevice(Staging(), destination, source, stream);
        ProfileRecorder.Current?.Copy(ProfileEventKind.CopyToDevice, nameof(CopyToDevice), source.Length);
    }

    /// <inheritdoc />
    /// <remarks>
    /// Ordered after the work queued before on <paramref name="stream"/>, and returns only when every byte is in
    /// <paramref name="destination"/>; an error of that earlier work surfaces here.
    /// </remarks>
    internal void CopyToHost(Span<byte> destination, DevicePtr source, DeviceStream stream)
    {
        Enter();
        CheckStream(stream, nameof(stream));
        if (destination.IsEmpty) return;
        CheckPointer(source, nameof(source));
        lock (_stagingGate) StagedCopy.ToHost(Staging(), destination, source, stream);
        if (ProfileRecorder.Current is { } recorder)
        {
            recorder.Copy(ProfileEventKind.CopyToHost, nameof(CopyToHost), destination.Length);
            recorder.HostSync(nameof(CopyToHost), always: true);
        }
    }

    // Allocated on first use: a device that never copies (a compile-only run) pins no host memory.
    private PinnedStagingBuffers Staging() => _staging ??= new PinnedStagingBuffers(_stagingChunkBytes);
}
