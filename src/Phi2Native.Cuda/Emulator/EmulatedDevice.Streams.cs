using System.Diagnostics;

namespace Phi2Native.Cuda.Emulator;

// Streams, events and device-to-device copies of the emulated device. Work runs synchronously on the calling
// thread, so a stream is only a name that must be created before use and destroyed once; an event is a host
// timestamp. Both are checked as strictly as memory: an unknown or destroyed handle is refused.
public sealed unsafe partial class EmulatedDevice
{
    private readonly HashSet<nint> _streams = [];
    private readonly Dictionary<nint, long> _events = [];
    private nint _nextStream, _nextEvent;

    /// <inheritdoc />
    /// <remarks>"emulated (libphi2emu)", or "emulated (libphi2emu, kernels from DIR)" over kernel sources from a folder.</remarks>
    public string Name => _kernelSourceDirectory is null ? "emulated (libphi2emu)" : $"emulated (libphi2emu, kernels from {_kernelSourceDirectory})";

    /// <inheritdoc/>
    public Tensors.DeviceKind Kind => Tensors.DeviceKind.Emulated;

    /// <inheritdoc />
    internal void CopyOnDevice(DevicePtr destination, DevicePtr source, long bytes, DeviceStream stream)
    {
        lock (_gate)
        {
            CheckStream(nameof(CopyOnDevice), stream);
            byte* to = Check(nameof(CopyOnDevice), destination, bytes);
            byte* from = Check(nameof(CopyOnDevice), source, bytes);
            // cuMemcpyDtoD leaves overlapping copies undefined; refuse them rather than pick an answer.
            if (to < from + bytes && from < to + bytes)
                throw new EmulatedDeviceException(nameof(CopyOnDevice), $"{bytes} bytes from {source} to {destination} overlap");
            if (TryCapture(stream, "copy", nameof(CopyOnDevice), s => CopyOnDevice(destination, source, bytes, s))) return;
            Buffer.MemoryCopy(from, to, bytes, bytes);
            Phi2Native.Profiling.ProfileRecorder.Current?.Copy(Phi2Native.Profiling.ProfileEventKind.CopyOnDevice, nameof(CopyOnDevice), bytes);
        }
    }

    /// <inheritdoc />
    internal DeviceStream CreateStream()
    {
        lock (_gate)
        {
            ThrowIfDisposed(nameof(CreateStream));
            var stream = new DeviceStream(++_nextStream);
            _streams.Add(stream.Handle);
            return stream;
        }
    }

    /// <inheritdoc />
    internal void DestroyStream(DeviceStream stream)
    {
        lock (_gate)
        {
            ThrowIfDisposed(nameof(DestroyStream));
            if (stream.Handle == 0) throw new EmulatedDeviceException(nameof(DestroyStream), "the default stream cannot be destroyed");
            if (_captures.ContainsKey(stream.Handle))
                throw new EmulatedDeviceException(nameof(DestroyStream), $"stream {stream.Handle} is capturing a graph: end the capture first");
            if (!_streams.Remove(stream.Handle))
                throw new EmulatedDeviceException(nameof(DestroyStream), $"stream {stream.Handle} was not created by this device or is already destroyed");
        }
    }

    /// <inheritdoc />
    internal DeviceEvent RecordEvent(DeviceStream stream)
    {
        lock (_gate)
        {
            CheckStream(nameof(RecordEvent), stream);
            var e = new DeviceEvent(++_nextEvent);
            _events.Add(e.Handle, Stopwatch.GetTimestamp());
            return e;
        }
    }

    /// <inheritdoc />
    internal float ElapsedMilliseconds(DeviceEvent start, DeviceEvent end)
    {
        lock (_gate)
        {
            long from = EventTime(nameof(ElapsedMilliseconds), start), to = EventTime(nameof(ElapsedMilliseconds), end);
            return (float)Stopwatch.GetElapsedTime(from, to).TotalMilliseconds;
        }
    }

    /// <inheritdoc />
    internal void DestroyEvent(DeviceEvent deviceEvent)
    {
        lock (_gate)
        {
            ThrowIfDisposed(nameof(DestroyEvent));
            if (!_events.Remove(deviceEvent.Handle))
                throw new EmulatedDeviceException(nameof(DestroyEvent), $"event {deviceEvent.Handle} was not recorded by this device or is already destroyed");
        }
    }

    // Every call that takes a stream refuses one this device did not create: on a GPU that is a crash or a
    // silent use of another context's stream.
    private void CheckStream(string call, DeviceStream stream)
    {
        ThrowIfDisposed(call);
        if (stream.Handle != 0 && !_streams.Contains(stream.Handle))
            throw new EmulatedDeviceException(call, $"stream {stream.Handle} was not created by this device or is already destroyed");
    }

    private long EventTime(string call, DeviceEvent e)
    {
        ThrowIfDisposed(call);
        return _events.TryGetValue(e.Handle, out long t)
            ? t
            : throw new EmulatedDeviceException(call, $"event {e.Handle} was not recorded by this device or is already destroyed");
    }
}
