namespace Phi2Native.Cuda.Gpu;

/// <summary>
/// Two host buffers through which copies between managed memory and the device travel, each with a marker of the
/// last asynchronous copy that reads or writes it. The real one is <see cref="PinnedStagingBuffers"/> (page-locked
/// memory and CUDA events); tests use a fake that runs copies late, so the chunking logic is checked without a GPU.
/// </summary>
internal interface IStagingBuffers
{
    /// <summary>Bytes per buffer: the chunk size.</summary>
    int ChunkBytes { get; }

    /// <summary>Buffer <paramref name="buffer"/> (0 or 1) as host memory; touch it only after <see cref="Wait"/>.</summary>
    Span<byte> Host(int buffer);

    /// <summary>Blocks until the last copy queued from or into <paramref name="buffer"/> has finished.</summary>
    void Wait(int buffer);

    /// <summary>Queues a copy of the first <paramref name="bytes"/> of <paramref name="buffer"/> to <paramref name="destination"/> on <paramref name="stream"/>, and marks the buffer busy until it has run.</summary>
    void EnqueueToDevice(int buffer, DevicePtr destination, int bytes, DeviceStream stream);

    /// <summary>Queues a copy of <paramref name="bytes"/> at <paramref name="source"/> into <paramref name="buffer"/> on <paramref name="stream"/>, and marks the buffer busy until it has run.</summary>
    void EnqueueToHost(int buffer, DevicePtr source, int bytes, DeviceStream stream);
}

/// <summary>
/// Copies between managed spans and device memory in chunks through <see cref="IStagingBuffers"/>, double-buffered:
/// while the device copies one chunk, the host fills or drains the other. A managed array can move (the GC compacts)
/// and pageable memory is staged by the driver anyway, so pinned staging is what makes the copies asynchronous.
/// </summary>
/// <remarks>Not thread-safe: the caller holds the buffers for the whole copy.</remarks>
internal static class StagedCopy
{
    /// <summary>
    /// Copies <paramref name="source"/> to <paramref name="destination"/>, ordered on <paramref name="stream"/>. Returns
    /// once every chunk is in a staging buffer and queued: the span may be reused at once, the device copies may still run.
    /// </summary>
    public static void ToDevice(IStagingBuffers buffers, DevicePtr destination, ReadOnlySpan<byte> source, DeviceStream stream)
    {
        int chunk = buffers.ChunkBytes;
        int buffer = 0;
        // long: offset + chunk may pass int.MaxValue after the last chunk of a span near 2 GiB.
        for (long offset = 0; offset < source.Length; offset += chunk, buffer ^= 1)
        {
            int n = (int)Math.Min(chunk, source.Length - offset);
            buffers.Wait(buffer); // the copy queued from this buffer two chunks ago (or by an earlier call) has read it
            source.Slice((int)offset, n).CopyTo(buffers.Host(buffer));
            buffers.EnqueueToDevice(buffer, destination.Offset(offset), n, stream);
        }
    }

    /// <summary>
    /// Copies <c>destination.Length</c> bytes at <paramref name="source"/> into <paramref name="destination"/>, after the
    /// work queued before on <paramref name="stream"/>. Returns only when every byte is in the span.
    /// </summary>
    public static void ToHost(IStagingBuffers buffers, Span<byte> destination, DevicePtr source, DeviceStream stream)
    {
        int chunk = buffers.ChunkBytes;
        int count = (int)(((long)destination.Length + chunk - 1) / chunk);
        // Chunk k goes through buffer k % 2. Before chunk k + 2 is queued into the same buffer, chunk k is drained
        // into the span, so the device fills one buffer while the host empties the other.
        for (int k = 0; k < count; k++)
        {
            if (k >= 2) Drain(buffers, destination, k - 2, chunk);
            int buffer = k & 1;
            int offset = k * chunk;
            buffers.Wait(buffer); // for k < 2: a copy of an earlier call may still read this buffer
            buffers.EnqueueToHost(buffer, source.Offset(offset), Math.Min(chunk, destination.Length - offset), stream);
        }
        for (int k = Math.Max(0, count - 2); k < count; k++) Drain(buffers, destination, k, chunk);
    }

    private static void Drain(IStagingBuffers buffers, Span<byte> destination, int k, int chunk)
    {
        int buffer = k & 1;
        int offset = k * chunk;
        int n = Math.Min(chunk, destination.Length - offset);
        buffers.Wait(buffer);
        buffers.Host(buffer)[..n].CopyTo(destination.Slice(offset, n));
    }
}
