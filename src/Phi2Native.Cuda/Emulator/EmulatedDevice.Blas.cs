namespace Phi2Native.Cuda.Emulator;

// The emulated device's matrix products. IDeviceApi.Blas is an EmulatedBlas, which reaches device memory only
// through AccessOperands: every operand's touched extent (from its sizes, leading dimension, stride and batch) is
// checked like a copy's range, so an ld or stride bug fails like an out-of-bounds access instead of reading a
// neighbour's data. The product then runs on host addresses under the device's lock, so no Free can race it.
public sealed unsafe partial class EmulatedDevice
{
    private EmulatedBlas? _blas;

    /// <inheritdoc />
    internal IBlas Blas => LazyInitializer.EnsureInitialized(ref _blas, () => new EmulatedBlas(this));

    /// <summary>
    /// Runs <paramref name="run"/> (a matrix product and its profile record) on <paramref name="stream"/> now, or records
    /// it when the stream is capturing a graph (named <paramref name="routine"/> for the graph's update rule).
    /// </summary>
    internal void RunOrCapture(string routine, DeviceStream stream, Action<DeviceStream> run)
    {
        lock (_gate)
        {
            CheckStream(routine, stream);
            if (TryCapture(stream, "blas", routine, run)) return;
        }
        run(stream);
    }

    /// <summary>
    /// Checks <paramref name="stream"/> and that each operand's touched extent lies inside one live allocation, then
    /// runs <paramref name="body"/> with the operands' host addresses (in order; 0 for an empty operand) while
    /// holding the device's lock.
    /// </summary>
    internal void AccessOperands(string call, DeviceStream stream, int batchCount, ReadOnlySpan<BlasOperand> operands, Action<ReadOnlySpan<nint>> body)
    {
        lock (_gate)
        {
            CheckStream(call, stream);
            var addresses = new nint[operands.Length];
            for (int i = 0; i < operands.Length; i++)
            {
                BlasOperand operand = operands[i];
                long bytes = operand.TouchedBytes(batchCount);
                if (bytes == 0) continue;
                try
                {
                    addresses[i] = (nint)Check(call, operand.Pointer, bytes);
                }
                catch (EmulatedDeviceException e)
                {
                    // Say which operand and what extent, then what the allocation check found.
                    string prefix = $"EmulatedDevice.{call}: ";
                    string detail = e.Message.StartsWith(prefix, StringComparison.Ordinal) ? e.Message[prefix.Length..] : e.Message;
                    throw new EmulatedDeviceException(call,
                        $"{operand.Describe(batchCount)} touches {bytes} bytes from {operand.Pointer}: {detail}", inner: e);
                }
            }
            body(addresses);
        }
    }
}
