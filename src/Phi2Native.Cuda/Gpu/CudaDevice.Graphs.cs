using Phi2Native.Cuda.Native;
using Phi2Native.Cuda.Profiling;
using Phi2Native.Profiling;

namespace Phi2Native.Cuda.Gpu;

// CUDA graphs: stream capture in global mode, instantiation, in-place update, launch. Kernels a graph launches must
// be loaded before the capture (their first launch compiles and loads a module, which a capture cannot do), and
// nothing may need cuMemAlloc meanwhile: the driver refuses both and invalidates the capture, and EndCapture says so.
// Memory: each graph owns a pool of the caching allocator (CachingAllocator.GraphPool) from its capture until it is
// destroyed; the capture allocates from that pool and the ready cache only, and records no fence (see the allocator).
public sealed partial class CudaDevice
{
    private readonly Dictionary<nint, CachingAllocator.GraphPool> _graphPools = [];
    private (nint Stream, CachingAllocator.GraphPool Pool, bool NewPool)? _capture;

    /// <inheritdoc />
    internal void BeginCapture(DeviceStream stream, DeviceGraph pool = default)
    {
        Enter();
        CheckStream(stream, nameof(stream));
        if (stream.Handle == 0) throw new ArgumentException("the default stream cannot be captured: capture a stream from CreateStream", nameof(stream));
        if (_capture is not null) throw new InvalidOperationException("another stream is capturing a graph: captures allocate from one pool at a time");
        CachingAllocator.GraphPool graphPool;
        if (pool.IsNone) graphPool = _allocator.CreatePool();
        else if (!_graphPools.TryGetValue(pool.Handle, out graphPool!))
            throw new ArgumentException($"graph {pool.Handle} was not made by this device or is already destroyed", nameof(pool));
        // Waits for the outstanding fences first: the whole cache is then ready to take from, and nothing polls events later.
        _allocator.BeginCapture(graphPool);
        try
        {
            CudaDriver.Check(CudaDriver.cuStreamBeginCapture(stream.Handle, CudaDriver.CaptureModeGlobal), "cuStreamBeginCapture");
        }
        catch
        {
            _allocator.EndCapture();
            if (pool.IsNone) _allocator.ReleasePool(graphPool);
            throw;
        }
        _capture = (stream.Handle, graphPool, pool.IsNone);
    }

    /// <inheritdoc />
    internal DeviceGraph EndCapture(DeviceStream stream, DeviceGraph reuse = default)
    {
        Enter();
        CheckStream(stream, nameof(stream));
        var capture = _capture is { } c && c.Stream == stream.Handle ? c : throw new ArgumentException($"stream {stream.Handle} is not capturing", nameof(stream));
        _capture = null;
        _allocator.EndCapture();
        nint graph;
        try
        {
            CudaDriver.Check(CudaDriver.cuStreamEndCapture(stream.Handle, out graph), "cuStreamEndCapture");
        }
        catch
        {
            if (capture.NewPool) _allocator.ReleasePool(capture.Pool);
            throw;
        }
        try
        {
            if (!reuse.IsNone)
            {
                var result = CudaDriver.cuGraphExecUpdate(reuse.Handle, graph, out var info);
                if (result == CuResult.Success && info.Result == 0)
                {
                    AttachPool(reuse.Handle, capture.Pool);
                    return reuse;
                }
                if (result != CuResult.ErrorGraphExecUpdateFailure) CudaDriver.Check(result, "cuGraphExecUpdate");
                CudaDriver.Check(CudaDriver.cuGraphExecDestroy(reuse.Handle), "cuGraphExecDestroy");
                // The old graph's pool goes with it unless the capture allocated from that pool (it moves to the new graph).
                if (_graphPools.Remove(reuse.Handle, out var old) && old != capture.Pool) _allocator.ReleasePool(old);
            }
            CudaDriver.Check(CudaDriver.cuGraphInstantiateWithFlags(out nint exec, graph, 0), "cuGraphInstantiate");
            AttachPool(exec, capture.Pool);
            return new DeviceGraph(exec);
        }
        catch
        {
            if (!_graphPools.ContainsValue(capture.Pool)) _allocator.ReleasePool(capture.Pool);
            throw;
        }
        finally
        {
            CudaDriver.cuGraphDestroy(graph);
        }
    }

    /// <inheritdoc />
    internal void LaunchGraph(DeviceGraph graph, DeviceStream stream)
    {
        Enter();
        CheckStream(stream, nameof(stream));
        if (graph.IsNone) throw new ArgumentException("no graph to launch", nameof(graph));
        var recorder = ProfileRecorder.Current;
        DeviceEvent? start = recorder is null ? null : SeamRecording.Begin(this, stream);
        CudaDriver.Check(CudaDriver.cuGraphLaunch(graph.Handle, stream.Handle), "cuGraphLaunch");
        // The driver runs the graph's operations without the seam: one event, timed as a whole.
        recorder?.Graph("cuGraphLaunch", $"graph 0x{graph.Handle:x}", SeamRecording.End(this, stream, start)).Dispose();
    }

    /// <inheritdoc />
    internal void DestroyGraph(DeviceGraph graph)
    {
        Enter();
        if (graph.IsNone) return;
        CudaDriver.Check(CudaDriver.cuGraphExecDestroy(graph.Handle), "cuGraphExecDestroy");
        AttachPool(graph.Handle, null);
    }

    // Gives a graph its pool (null: none), releasing the pool it had unless that is the same one; the released blocks are
    // fenced like any free, after the graph's queued launches.
    private void AttachPool(nint graph, CachingAllocator.GraphPool? pool)
    {
        if (_graphPools.Remove(graph, out var old) && old != pool) _allocator.ReleasePool(old);
        if (pool is not null) _graphPools[graph] = pool;
    }
}
