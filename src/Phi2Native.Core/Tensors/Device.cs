namespace Phi2Native.Tensors;

/// <summary>
/// Kind of machine a backend computes on, as users name it: <c>cpu</c>, <c>cuda:N</c> or <c>emulated</c> (the
/// command line's <c>--device</c> words, which <see cref="Device.ToString"/> prints).
/// </summary>
public enum DeviceKind
{
    /// <summary>The managed CPU backend.</summary>
    Cpu,
    /// <summary>An NVIDIA GPU through the CUDA backend.</summary>
    Cuda,
    /// <summary>
    /// The CUDA backend over the kernel emulator: the same kernels and backend code, run on the CPU (far slower than
    /// <see cref="Cpu"/>; it exists to check the CUDA path without a GPU).
    /// </summary>
    Emulated,
}

/// <summary>A device a tensor lives on: "cpu", "cuda:N" or "emulated".</summary>
public readonly record struct Device(DeviceKind Kind, int Index = 0)
{
    /// <summary>The CPU.</summary>
    public static Device Cpu => new(DeviceKind.Cpu);

    /// <summary>True for the CUDA backend's devices: a GPU or the emulated one.</summary>
    public bool IsCudaBackend => Kind != DeviceKind.Cpu;

    /// <summary><c>cpu</c>, <c>cuda:N</c> or <c>emulated</c>.</summary>
    public override string ToString() => Kind switch
    {
        DeviceKind.Cpu => "cpu",
        DeviceKind.Emulated => "emulated",
        _ => $"cuda:{Index}",
    };
}
