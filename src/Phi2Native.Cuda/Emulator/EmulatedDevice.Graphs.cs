using System.Runtime.InteropServices;
using Phi2Native.Profiling;

namespace Phi2Native.Cuda.Emulator;

// CUDA graphs on the emulated device: a capturing stream records each operation (a launch with a copy of its
// arguments' values, a matrix product, a fill, a device-to-device copy) instead of running it, and a graph launch
// runs the records in order through the same checked paths, so a replayed graph faults, counts traffic and profiles
// exactly as the operations would one by one. What CUDA refuses in global capture mode is refused here, and spoils
// the capture the way CUDA invalidates it: the host waiting (CopyToHost, Synchronize), host memory moving
// (CopyToDevice: a graph cannot hold pageable memory), and an allocation the caching allocator cannot serve from its
// cache (the driver allocation cuMemAlloc would be).
// Memory: as CudaDevice's caching allocator gives each graph a pool (CachingAllocator.GraphPool, run here on the
// allocator model), the blocks a capture allocates or frees stay mapped for the graph, not quarantined, until the
// graph is destroyed: a replay writes them again. A block a graph holds that its owner frees later stays too.
public sealed unsafe partial class EmulatedDevice
{
    private readonly Dictionary<nint, Capture> _captures = [];
    private readonly Dictionary<nint, Node[]> _graphs = [];
    private readonly Dictionary<nint, GraphMemory> _graphMemory = [];
    private readonly Dictionary<ulong, GraphMemory> _blockGraph = [];   // a live block's graph, by its start
    private GraphMemory? _capturing;
    private int _heldForGraphs;
    private nint _nextGraph;

    /// <summary>A graph's pool in the allocator model, and the freed blocks it keeps mapped.</summary>
    private sealed class GraphMemory(Gpu.CachingAllocator.GraphPool model)
    {
        public Gpu.CachingAllocator.GraphPool Model { get; } = model;
        public List<Block> Held { get; } = [];
        public bool Released { get; set; }
    }

    /// <summary>One captured operation: what a graph update must match (kind and name), and how it runs on a stream.</summary>
    private sealed record Node(string Kind, string Name, Action<DeviceStream> Run);

    private sealed class Capture(GraphMemory memory, bool newMemory)
    {
        public readonly List<Node> Nodes = [];
        public string? SpoiledBy;
        public GraphMemory Memory { get; } = memory;
        public bool NewMemory { get; } = newMemory;
    }

    /// <inheritdoc />
    internal void BeginCapture(DeviceStream stream, DeviceGraph pool = default)
    {
        lock (_gate)
        {
            CheckStream(nameof(BeginCapture), stream);
            if (stream.Handle == 0)
                throw new EmulatedDeviceException(nameof(BeginCapture), "the default stream cannot be captured: capture a stream from CreateStream");
            if (_captures.ContainsKey(stream.Handle))
                throw new EmulatedDeviceException(nameof(BeginCapture), $"stream {stream.Handle} is already capturing");
            if (_capturing is not null)
                throw new EmulatedDeviceException(nameof(BeginCapture), "another stream is capturing a graph: captures allocate from one pool at a time");
            GraphMemory memory;
            if (pool.IsNone) memory = new GraphMemory(_allocatorModel.CreatePool());
            else if (!_graphMemory.TryGetValue(pool.Handle, out memory!))
                throw new EmulatedDeviceException(nameof(BeginCapture), $"graph {pool.Handle} was not made by this device or is already destroyed");
            _allocatorModel.BeginCapture(memory.Model);
            _capturing = memory;
            _captures.Add(stream.Handle, new Capture(memory, pool.IsNone));
        }
    }

    /// <inheritdoc />
    internal DeviceGraph EndCapture(DeviceStream stream, DeviceGraph reuse = default)
    {
        lock (_gate)
        {
            CheckStream(nameof(EndCapture), stream);
            if (!_captures.Remove(stream.Handle, out var capture))
                throw new EmulatedDeviceException(nameof(EndCapture), $"stream {stream.Handle} is not capturing: call BeginCapture first");
            _allocatorModel.EndCapture();
            _capturing = null;
            if (capture.SpoiledBy is { } why)
            {
                if (capture.NewMemory) ReleaseGraphMemory(capture.Memory);
                throw new EmulatedDeviceException(nameof(EndCapture), $"the capture on stream {stream.Handle} was invalidated by {why}");
            }
            Node[] nodes = [.. capture.Nodes];
            if (!reuse.IsNone)
            {
                var old = GraphNodes(nameof(EndCapture), reuse);
                // cuGraphExecUpdate's rule, as far as this engine meets it: the same operations in the same order,
                // each with its kernel or routine; arguments, shapes and pointers may change.
                if (old.Length == nodes.Length && old.Zip(nodes).All(p => p.First.Kind == p.Second.Kind && p.First.Name == p.Second.Name))
                {
                    _graphs[reuse.Handle] = nodes;
                    AttachMemory(reuse, capture.Memory);
                    return reuse;
                }
                _graphs.Remove(reuse.Handle);
                // The old graph goes; its pool goes with it unless the capture allocated from that pool (it moves on below).
                if (_graphMemory.Remove(reuse.Handle, out var oldMemory) && oldMemory != capture.Memory) ReleaseGraphMemory(oldMemory);
            }
            var graph = new DeviceGraph(++_nextGraph);
            _graphs.Add(graph.Handle, nodes);
            AttachMemory(graph, capture.Memory);
            return graph;
        }
    }

    /// <inheritdoc />
    internal void LaunchGraph(DeviceGraph graph, DeviceStream stream)
    {
        lock (_gate)
        {
            CheckStream(nameof(LaunchGraph), stream);
            var nodes = GraphNodes(nameof(LaunchGraph), graph);
            // A graph launched on a capturing stream becomes one node of the outer capture, as a child graph would.
            if (TryCapture(stream, "graph", $"graph {graph.Handle}", s => LaunchGraph(graph, s))) return;
            using var profile = ProfileRecorder.Current?.Graph("cuGraphLaunch", $"graph {graph.Handle}: {nodes.Length} operations");
            foreach (var node in nodes) node.Run(stream);
        }
    }

    /// <inheritdoc />
    internal void DestroyGraph(DeviceGraph graph)
    {
        lock (_gate)
        {
            ThrowIfDisposed(nameof(DestroyGraph));
            if (!_graphs.Remove(graph.Handle))
                throw new EmulatedDeviceException(nameof(DestroyGraph), $"graph {graph.Handle} was not made by this device or is already destroyed");
            AttachMemory(graph, null);
        }
    }

    // Gives graph its memory (null: none), releasing the memory it had unless that is the same.
    private void AttachMemory(DeviceGraph graph, GraphMemory? memory)
    {
        if (_graphMemory.Remove(graph.Handle, out var old) && old != memory) ReleaseGraphMemory(old);
        if (memory is not null) _graphMemory[graph.Handle] = memory;
    }

    // The pool goes back to the allocator model, and the blocks kept mapped for the graph are quarantined at last.
    private void ReleaseGraphMemory(GraphMemory memory)
    {
        if (memory.Released) return;
        memory.Released = true;
        _allocatorModel.ReleasePool(memory.Model);
        foreach (var entry in _blockGraph.Where(e => e.Value == memory).ToList()) _blockGraph.Remove(entry.Key);
        foreach (var block in memory.Held)
        {
            _live.RemoveAt(IndexOfStart(block.Start));
            _heldForGraphs--;
            Quarantine(block);
        }
        memory.Held.Clear();
    }

    /// <summary>
    /// Whether a freed block stays mapped for a graph (true: it is kept and not quarantined): a block a capture allocated
    /// while its graph lives, or any block freed during a capture, since the captured work may use it on every replay.
    /// </summary>
    private bool KeepForGraph(Block block)
    {
        var memory = _blockGraph.Remove(block.Start, out var owner) ? owner : _capturing;
        if (memory is null || memory.Released) return false;
        memory.Held.Add(block);
        block.HeldForGraph = true;
        _heldForGraphs++;
        return true;
    }

    /// <summary>Notes that a block allocated now belongs to the capture's graph.</summary>
    private void NoteCaptureAllocation(Block block)
    {
        if (_capturing is { } memory) _blockGraph[block.Start] = memory;
    }

    /// <summary>
    /// Records <paramref name="run"/> when <paramref name="stream"/> is capturing (true: the caller does nothing more);
    /// false when it is not. Called under the lock after the stream is checked.
    /// </summary>
    private bool TryCapture(DeviceStream stream, string kind, string name, Action<DeviceStream> run)
    {
        if (_captures.Count == 0 || !_captures.TryGetValue(stream.Handle, out var capture)) return false;
        capture.Nodes.Add(new Node(kind, name, run));
        return true;
    }

    /// <summary>A launch recorded with a copy of each argument's value (the sizes from the kernel's signature).</summary>
    private bool TryCaptureLaunch(string kernelName, Dim3 grid, Dim3 block, int dynamicSharedBytes, DeviceStream stream,
        ReadOnlySpan<nint> argPointers, KernelCost cost)
    {
        if (_captures.Count == 0 || !_captures.ContainsKey(stream.Handle)) return false;
        int[] sizes = Emulator.ParameterSizes(kernelName)
            ?? throw new EmulatedDeviceException(nameof(Launch), $"no kernel named {kernelName} in libphi2emu", kernelName);
        if (sizes.Length != argPointers.Length)
            throw new EmulatedDeviceException(nameof(Launch), $"kernel {kernelName} takes {sizes.Length} parameters, {argPointers.Length} were given", kernelName);
        var values = new byte[sizes.Length][];
        for (int i = 0; i < sizes.Length; i++) values[i] = new ReadOnlySpan<byte>((void*)argPointers[i], sizes[i]).ToArray();
        return TryCapture(stream, "kernel", kernelName, s =>
        {
            var handles = values.Select(v => GCHandle.Alloc(v, GCHandleType.Pinned)).ToArray();
            try
            {
                var pointers = handles.Select(h => h.AddrOfPinnedObject()).ToArray();
                Launch(kernelName, grid, block, dynamicSharedBytes, s, pointers, cost);
            }
            finally
            {
                foreach (var h in handles) h.Free();
            }
        });
    }

    /// <summary>Refuses <paramref name="call"/> on a capturing stream and spoils its capture, as CUDA invalidates it.</summary>
    private void RefuseWhileCapturing(string call, DeviceStream stream, string why)
    {
        if (_captures.Count == 0 || !_captures.TryGetValue(stream.Handle, out var capture)) return;
        capture.SpoiledBy ??= $"{call} ({why})";
        throw new EmulatedDeviceException(call, $"stream {stream.Handle} is capturing a graph, which cannot {why}; the capture is invalidated");
    }

    /// <summary>Whether any stream is capturing (an allocation the cache cannot serve then spoils every capture).</summary>
    private bool AnyCapture => _captures.Count > 0;

    private void SpoilEveryCapture(string why)
    {
        foreach (var capture in _captures.Values) capture.SpoiledBy ??= why;
    }

    private Node[] GraphNodes(string call, DeviceGraph graph) =>
        _graphs.TryGetValue(graph.Handle, out var nodes)
            ? nodes
            : throw new EmulatedDeviceException(call, $"graph {graph.Handle} was not made by this device or is already destroyed");
}
