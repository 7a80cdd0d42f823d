namespace Phi2Native.Cuda.Gpu;

// The members of the device seam that only this assembly and its friends call (IDeviceApi's internal members: memory,
// copies, streams, events, graphs, launches, BLAS), each forwarded to this device's own internal member of the same name.
// C# lets a public class implement an internal interface member only explicitly.
public sealed partial class CudaDevice
{
    DevicePtr IDeviceApi.Allocate(long bytes) => Allocate(bytes);
    void IDeviceApi.Free(DevicePtr pointer) => Free(pointer);
    void IDeviceApi.CopyToDevice(DevicePtr destination, ReadOnlySpan<byte> source, DeviceStream stream) => CopyToDevice(destination, source, stream);
    void IDeviceApi.CopyToHost(Span<byte> destination, DevicePtr source, DeviceStream stream) => CopyToHost(destination, source, stream);
    void IDeviceApi.CopyOnDevice(DevicePtr destination, DevicePtr source, long bytes, DeviceStream stream) => CopyOnDevice(destination, source, bytes, stream);
    void IDeviceApi.Fill(DevicePtr pointer, byte value, long bytes, DeviceStream stream) => Fill(pointer, value, bytes, stream);
    void IDeviceApi.Launch(string kernelName, Dim3 grid, Dim3 block, int dynamicSharedBytes, DeviceStream stream, ReadOnlySpan<nint> argPointers) =>
        Launch(kernelName, grid, block, dynamicSharedBytes, stream, argPointers);
    void IDeviceApi.Launch(string kernelName, Dim3 grid, Dim3 block, int dynamicSharedBytes, DeviceStream stream, ReadOnlySpan<nint> argPointers,
        in Phi2Native.Profiling.KernelCost cost) => Launch(kernelName, grid, block, dynamicSharedBytes, stream, argPointers, cost);
    void IDeviceApi.Synchronize(DeviceStream stream) => Synchronize(stream);
    DeviceStream IDeviceApi.CreateStream() => CreateStream();
    void IDeviceApi.DestroyStream(DeviceStream stream) => DestroyStream(stream);
    DeviceEvent IDeviceApi.RecordEvent(DeviceStream stream) => RecordEvent(stream);
    float IDeviceApi.ElapsedMilliseconds(DeviceEvent start, DeviceEvent end) => ElapsedMilliseconds(start, end);
    void IDeviceApi.DestroyEvent(DeviceEvent deviceEvent) => DestroyEvent(deviceEvent);
    void IDeviceApi.BeginCapture(DeviceStream stream, DeviceGraph pool) => BeginCapture(stream, pool);
    DeviceGraph IDeviceApi.EndCapture(DeviceStream stream, DeviceGraph reuse) => EndCapture(stream, reuse);
    void IDeviceApi.LaunchGraph(DeviceGraph graph, DeviceStream stream) => LaunchGraph(graph, stream);
    void IDeviceApi.DestroyGraph(DeviceGraph graph) => DestroyGraph(graph);
    IBlas IDeviceApi.Blas => Blas;
    DeviceMemoryStatistics IDeviceApi.Memory => Memory;
    long IDeviceApi.ReleaseCachedMemory(DeviceStream stream) => ReleaseCachedMemory(stream);
}
