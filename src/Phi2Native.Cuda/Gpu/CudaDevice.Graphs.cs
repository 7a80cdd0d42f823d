using Phi2Native.Cuda.Native;

namespace Phi2Native.Cuda.Gpu;

// CUDA graphs: stream capture in global mode, instantiation, in-place update, launch. Kernels a graph launches must
// be loaded before the capture (their first launch compiles and loads a module, which a capture cannot do), and
// nothing may need cuMemAlloc meanwhile: the driver refuses both and invalidates the capture, and EndCapture says so.
public sealed partial class CudaDevice
{
    /// <inheritdoc />
    internal void BeginCapture(DeviceStream stream)
    {
        Enter();
        CheckStream(stream, nameof(stream));
        if (stream.Handle == 0) throw new ArgumentException("the default stream cannot be captured: capture a stream from CreateStream", nameof(stream));
        CudaDriver.Check(CudaDriver.cuStreamBeginCapture(stream.Handle, CudaDriver.CaptureModeGlobal), "cuStreamBeginCapture");
    }

    /// <inheritdoc />
    internal DeviceGraph EndCapture(DeviceStream stream, DeviceGraph reuse = default)
    {
        Enter();
        CheckStream(stream, nameof(stream));
        CudaDriver.Check(CudaDriver.cuStreamEndCapture(stream.Handle, out nint graph), "cuStreamEndCapture");
        try
        {
            if (!reuse.IsNone)
            {
                var result = CudaDriver.cuGraphExecUpdate(reuse.Handle, graph, out var info);
                if (result == CuResult.Success && info.Result == 0) return reuse;
                if (result != CuResult.ErrorGraphExecUpdateFailure) CudaDriver.Check(result, "cuGraphExecUpdate");
                CudaDriver.Check(CudaDriver.cuGraphExecDestroy(reuse.Handle), "cuGraphExecDestroy");
            }
            CudaDriver.Check(CudaDriver.cuGraphInstantiateWithFlags(out nint exec, graph, 0), "cuGraphInstantiate");
            return new DeviceGraph(exec);
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
        CudaDriver.Check(CudaDriver.cuGraphLaunch(graph.Handle, stream.Handle), "cuGraphLaunch");
    }

    /// <inheritdoc />
    internal void DestroyGraph(DeviceGraph graph)
    {
        Enter();
        if (graph.IsNone) return;
        CudaDriver.Check(CudaDriver.cuGraphExecDestroy(graph.Handle), "cuGraphExecDestroy");
    }
}
