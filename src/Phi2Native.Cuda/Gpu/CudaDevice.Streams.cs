using Phi2Native.Cuda.Native;

namespace Phi2Native.Cuda.Gpu;

// Streams, events, fences for the allocator, synchronization, device-to-device copies and fills.
public sealed partial class CudaDevice
{
    private readonly object _streamGate = new();
    // The live streams, the legacy default stream (0) first. Copy-on-write, so fences read it without a lock.
    private nint[] _streams = [0];
    private readonly HashSet<nint> _timingEvents = [];
    private readonly Stack<nint> _fenceEvents = new();   // recycled CU_EVENT_DISABLE_TIMING events

    /// <inheritdoc />
    /// <remarks>A non-blocking stream (CU_STREAM_NON_BLOCKING): it does not wait for the legacy default stream.</remarks>
    internal DeviceStream CreateStream()
    {
        Enter();
        CudaDriver.Check(CudaDriver.cuStreamCreate(out nint stream, CudaDriver.StreamNonBlocking));
        lock (_streamGate) _streams = [.. _streams, stream];
        return new DeviceStream(stream);
    }

    /// <inheritdoc />
    /// <remarks>
    /// Waits for the stream's queued work before destroying it: the allocator's fences cover live streams only, so
    /// memory freed after use on this stream must not look reusable while that use may still run.
    /// </remarks>
    internal void DestroyStream(DeviceStream stream)
    {
        Enter();
        if (stream.Handle == 0) throw new ArgumentException("the default stream cannot be destroyed", nameof(stream));
        CheckStream(stream, nameof(stream));
        CudaDriver.Check(CudaDriver.cuStreamSynchronize(stream.Handle));
        lock (_streamGate)
        {
            if (Array.IndexOf(_streams, stream.Handle) < 0)
                throw new ArgumentException($"stream {stream.Handle} was destroyed meanwhile by another thread", nameof(stream));
            _streams = [.. _streams.Where(s => s != stream.Handle)];
        }
        CudaDriver.Check(CudaDriver.cuStreamDestroy(stream.Handle));
    }

    /// <inheritdoc />
    internal DeviceEvent RecordEvent(DeviceStream stream)
    {
        Enter();
        CheckStream(stream, nameof(stream));
        CudaDriver.Check(CudaDriver.cuEventCreate(out nint e, CudaDriver.EventDefault));
        try
        {
            CudaDriver.Check(CudaDriver.cuEventRecord(e, stream.Handle));
        }
        catch
        {
            CudaDriver.cuEventDestroy(e);
            throw;
        }
        lock (_streamGate) _timingEvents.Add(e);
        return new DeviceEvent(e);
    }

    /// <inheritdoc />
    /// <remarks>
    /// Waits for both events (cuEventSynchronize; on different streams the start may finish later), so an error of
    /// the work before them surfaces here. The time comes from cuEventElapsedTime_v2, or from the plain export on a
    /// driver without it (chosen once per process, by which of the two libcuda exports).
    /// </remarks>
    internal float ElapsedMilliseconds(DeviceEvent start, DeviceEvent end)
    {
        Enter();
        CheckEvent(start, nameof(start));
        CheckEvent(end, nameof(end));
        CudaDriver.Check(CudaDriver.cuEventSynchronize(start.Handle));
        CudaDriver.Check(CudaDriver.cuEventSynchronize(end.Handle));
        CudaDriver.Check(CudaDriver.cuEventElapsedTime(out float milliseconds, start.Handle, end.Handle));
        return milliseconds;
    }

    /// <inheritdoc />
    internal void DestroyEvent(DeviceEvent deviceEvent)
    {
        Enter();
        lock (_streamGate)
        {
            if (!_timingEvents.Remove(deviceEvent.Handle))
                throw new ArgumentException($"event {deviceEvent.Handle} was not recorded by this device or is already destroyed", nameof(deviceEvent));
        }
        CudaDriver.Check(CudaDriver.cuEventDestroy(deviceEvent.Handle));
    }

    /// <inheritdoc />
    /// <remarks>cuStreamSynchronize: an error of any work queued on the stream (a kernel fault) is thrown here, naming the call.</remarks>
    internal void Synchronize(DeviceStream stream)
    {
        Enter();
        CheckStream(stream, nameof(stream));
        CudaDriver.Check(CudaDriver.cuStreamSynchronize(stream.Handle));
        Phi2Native.Profiling.ProfileRecorder.Current?.HostSync(nameof(Synchronize), always: false);
    }

    /// <inheritdoc />
    internal void CopyOnDevice(DevicePtr destination, DevicePtr source, long bytes, DeviceStream stream)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        Enter();
        CheckStream(stream, nameof(stream));
        if (bytes == 0) return;
        CheckPointer(destination, nameof(destination));
        CheckPointer(source, nameof(source));
        if (destination.Address < source.Address + (ulong)bytes && source.Address < destination.Address + (ulong)bytes)
            throw new ArgumentException($"{bytes} bytes from {source} to {destination} overlap; cuMemcpyDtoD leaves that undefined", nameof(destination));
        CudaDriver.Check(CudaDriver.cuMemcpyDtoDAsync(destination.Address, source.Address, (nuint)bytes, stream.Handle));
        Phi2Native.Profiling.ProfileRecorder.Current?.Copy(Phi2Native.Profiling.ProfileEventKind.CopyOnDevice, nameof(CopyOnDevice), bytes);
    }

    /// <inheritdoc />
    internal void Fill(DevicePtr pointer, byte value, long bytes, DeviceStream stream)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        Enter();
        CheckStream(stream, nameof(stream));
        if (bytes == 0) return;
        CheckPointer(pointer, nameof(pointer));
        CudaDriver.Check(CudaDriver.cuMemsetD8Async(pointer.Address, value, (nuint)bytes, stream.Handle));
        Phi2Native.Profiling.ProfileRecorder.Current?.Copy(Phi2Native.Profiling.ProfileEventKind.CopyOnDevice, nameof(Fill), bytes);
    }

    /// <summary>
    /// A fence for the allocator: one event recorded on every live stream (the legacy default stream included, which
    /// non-blocking streams do not wait for). Events are recycled through a pool.
    /// </summary>
    private IAllocationFence RecordFence()
    {
        nint[] streams = Volatile.Read(ref _streams);
        var events = new nint[streams.Length];
        for (int i = 0; i < streams.Length; i++)
        {
            lock (_streamGate) events[i] = _fenceEvents.Count > 0 ? _fenceEvents.Pop() : 0;
            if (events[i] == 0) CudaDriver.Check(CudaDriver.cuEventCreate(out events[i], CudaDriver.EventDisableTiming));
            CudaDriver.Check(CudaDriver.cuEventRecord(events[i], streams[i]));
        }
        return new EventFence(this, events);
    }

    /// <summary>An allocator fence: complete when each of its events (one per stream) is.</summary>
    private sealed class EventFence(CudaDevice device, nint[] events) : IAllocationFence
    {
        public bool IsComplete
        {
            get
            {
                foreach (nint e in events)
                {
                    var r = CudaDriver.cuEventQuery(e);
                    if (r == CuResult.ErrorNotReady) return false;
                    CudaDriver.Check(r, "cuEventQuery");
                }
                return true;
            }
        }

        public void Wait()
        {
            foreach (nint e in events) CudaDriver.Check(CudaDriver.cuEventSynchronize(e));
        }

        public void Dispose()
        {
            lock (device._streamGate)
                foreach (nint e in events) device._fenceEvents.Push(e);
        }
    }

    // A stream handle this device did not create (or already destroyed) would, on a GPU, be a crash or another
    // context's stream: refuse it with the argument's name.
    private void CheckStream(DeviceStream stream, string argument)
    {
        if (stream.Handle != 0 && Array.IndexOf(Volatile.Read(ref _streams), stream.Handle) < 0)
            throw new ArgumentException($"stream {stream.Handle} was not created by this device or is already destroyed", argument);
    }

    private void CheckEvent(DeviceEvent e, string argument)
    {
        lock (_streamGate)
        {
            if (!_timingEvents.Contains(e.Handle))
                throw new ArgumentException($"event {e.Handle} was not recorded by this device or is already destroyed", argument);
        }
    }

    private static void CheckPointer(DevicePtr pointer, string argument)
    {
        if (pointer.IsNull) throw new ArgumentException("the device pointer is null", argument);
    }

    private void DestroyEventsAndStreams()
    {
        lock (_streamGate)
        {
            foreach (nint e in _timingEvents) CudaDriver.cuEventDestroy(e);
            foreach (nint e in _fenceEvents) CudaDriver.cuEventDestroy(e);
            foreach (nint s in _streams) if (s != 0) CudaDriver.cuStreamDestroy(s);
            _timingEvents.Clear();
            _fenceEvents.Clear();
            _streams = [0];
        }
    }
}
