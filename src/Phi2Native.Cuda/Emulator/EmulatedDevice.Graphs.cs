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
public sealed unsafe partial class EmulatedDevice
{
    private readonly Dictionary<nint, Capture> _captures = [];
    private readonly Dictionary<nint, Node[]> _graphs = [];
    private nint _nextGraph;

    /// <summary>One captured operation: what a graph update must match (kind and name), and how it runs on a stream.</summary>
    private sealed record Node(string Kind, string Name, Action<DeviceStream> Run);

    private sealed class Capture
    {
        public readonly List<Node> Nodes = [];
        public string? SpoiledBy;
    }

    /// <inheritdoc />
    internal void BeginCapture(DeviceStream stream)
    {
        lock (_gate)
        {
            CheckStream(nameof(BeginCapture), stream);
            if (stream.Handle == 0)
                throw new EmulatedDeviceException(nameof(BeginCapture), "the default stream cannot be captured: capture a stream from CreateStream");
            if (!_captures.TryAdd(stream.Handle, new Capture()))
                throw new EmulatedDeviceException(nameof(BeginCapture), $"stream {stream.Handle} is already capturing");
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
            if (capture.SpoiledBy is { } why)
                throw new EmulatedDeviceException(nameof(EndCapture), $"the capture on stream {stream.Handle} was invalidated by {why}");
            Node[] nodes = [.. capture.Nodes];
            if (!reuse.IsNone)
            {
                var old = GraphNodes(nameof(EndCapture), reuse);
                // cuGraphExecUpdate's rule, as far as this engine meets it: the same operations in the same order,
                // each with its kernel or routine; arguments, shapes and pointers may change.
                if (old.Length == nodes.Length && old.Zip(nodes).All(p => p.First.Kind == p.Second.Kind && p.First.Name == p.Second.Name))
                {
                    _graphs[reuse.Handle] = nodes;
                    return reuse;
                }
                _graphs.Remove(reuse.Handle);
            }
            var graph = new DeviceGraph(++_nextGraph);
            _graphs.Add(graph.Handle, nodes);
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
        }
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
