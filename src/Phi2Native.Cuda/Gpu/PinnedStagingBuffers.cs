using Phi2Native.Cuda.Native;

namespace Phi2Native.Cuda.Gpu;

/// <summary>
/// <see cref="IStagingBuffers"/> over two page-locked host buffers (cuMemAllocHost), each with an event recorded
/// after the last copy that uses it, so <see cref="Wait"/> blocks only as long as that copy. Page-locked memory is
/// what lets cuMemcpy*Async run asynchronously; from pageable memory the driver would stage synchronously itself.
/// </summary>
/// <remarks>The caller makes the buffers' context current and holds them for a whole copy (one copy at a time).</remarks>
internal sealed unsafe class PinnedStagingBuffers : IStagingBuffers, IDisposable
{
    /// <summary>The default chunk: 8 MiB per buffer, large enough that per-copy overhead (~10 µs) is noise against PCIe time.</summary>
    public const int DefaultChunkBytes = 8 << 20;

    private readonly nint[] _host = new nint[2];
    private readonly nint[] _events = new nint[2];
    private readonly bool[] _busy = new bool[2];

    /// <summary>Allocates the two buffers and their events in the current context.</summary>
    public PinnedStagingBuffers(int chunkBytes = DefaultChunkBytes)
    {
        if (chunkBytes <= 0 || chunkBytes % 256 != 0)
            throw new ArgumentOutOfRangeException(nameof(chunkBytes), chunkBytes, "the chunk must be a positive multiple of 256 bytes");
        ChunkBytes = chunkBytes;
        try
        {
            for (int i = 0; i < 2; i++)
            {
                CudaDriver.Check(CudaDriver.cuMemAllocHost(out _host[i], (nuint)chunkBytes));
                CudaDriver.Check(CudaDriver.cuEventCreate(out _events[i], CudaDriver.EventDisableTiming));
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public int ChunkBytes { get; }

    public Span<byte> Host(int buffer) => new((void*)_host[buffer], ChunkBytes);

    public void Wait(int buffer)
    {
        if (!_busy[buffer]) return;
        CudaDriver.Check(CudaDriver.cuEventSynchronize(_events[buffer]));
        _busy[buffer] = false;
    }

    public void EnqueueToDevice(int buffer, DevicePtr destination, int bytes, DeviceStream stream)
    {
        CudaDriver.Check(CudaDriver.cuMemcpyHtoDAsync(destination.Address, (void*)_host[buffer], (nuint)bytes, stream.Handle));
        MarkBusy(buffer, stream);
    }

    public void EnqueueToHost(int buffer, DevicePtr source, int bytes, DeviceStream stream)
    {
        CudaDriver.Check(CudaDriver.cuMemcpyDtoHAsync((void*)_host[buffer], source.Address, (nuint)bytes, stream.Handle));
        MarkBusy(buffer, stream);
    }

    private void MarkBusy(int buffer, DeviceStream stream)
    {
        CudaDriver.Check(CudaDriver.cuEventRecord(_events[buffer], stream.Handle));
        _busy[buffer] = true;
    }

    /// <summary>Waits for the copies still using the buffers, then frees them (in the current context).</summary>
    public void Dispose()
    {
        Exception? first = null;
        for (int i = 0; i < 2; i++)
        {
            try { Wait(i); } catch (CudaException e) { first ??= e; }
            if (_events[i] != 0) { try { CudaDriver.Check(CudaDriver.cuEventDestroy(_events[i])); } catch (CudaException e) { first ??= e; } }
            if (_host[i] != 0) { try { CudaDriver.Check(CudaDriver.cuMemFreeHost(_host[i])); } catch (CudaException e) { first ??= e; } }
            _events[i] = 0;
            _host[i] = 0;
            _busy[i] = false;
        }
        if (first is not null) throw first;
    }
}
