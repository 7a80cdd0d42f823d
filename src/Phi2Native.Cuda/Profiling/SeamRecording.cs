using Phi2Native.Profiling;

namespace Phi2Native.Cuda.Profiling;

/// <summary>
/// What both devices (<see cref="Gpu.CudaDevice"/>, <see cref="Emulator.EmulatedDevice"/>) do to record a call at the
/// seam while a <see cref="ProfileRecorder"/> is open: the launch's shape in words and, on a GPU, a pair of events
/// around it whose elapsed time is read when the recorder stops.
/// </summary>
internal static class SeamRecording
{
    /// <summary>"grid (x,y,z) block (x,y,z) shared N".</summary>
    public static string LaunchDetail(Dim3 grid, Dim3 block, int dynamicSharedBytes) =>
        $"grid {grid} block {block} shared {dynamicSharedBytes}";

    /// <summary>"m M n N k K [x batch] A->C [+C] [epilogue]" (+C: beta is not 0, C is read).</summary>
    public static string GemmDetail(int m, int n, int k, int batch, Tensors.DType inputs, Tensors.DType output, bool readsC, string? epilogue = null) =>
        $"m {m} n {n} k {k}{(batch > 1 ? $" x {batch}" : "")} {inputs}->{output}{(readsC ? " +C" : "")}{(epilogue is null ? "" : $" {epilogue}")}";

    /// <summary>An event before a GPU call (null on the emulator, whose host times mean nothing about a GPU).</summary>
    public static DeviceEvent? Begin(IDeviceApi device, DeviceStream stream) =>
        device.Kind == Tensors.DeviceKind.Cuda ? device.RecordEvent(stream) : null;

    /// <summary>The event after the call, and how to read the time between the two once the work has finished.</summary>
    public static Func<double>? End(IDeviceApi device, DeviceStream stream, DeviceEvent? start)
    {
        if (start is not { } begin) return null;
        var end = device.RecordEvent(stream);
        return () =>
        {
            double ms = device.ElapsedMilliseconds(begin, end);
            device.DestroyEvent(begin);
            device.DestroyEvent(end);
            return ms;
        };
    }
}
