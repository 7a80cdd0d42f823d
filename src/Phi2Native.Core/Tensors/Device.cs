namespace Phi2Native.Tensors;

/// <summary>Kind of machine a backend computes on.</summary>
public enum DeviceKind
{
    /// <summary>The managed CPU backend.</summary>
    Cpu,
    /// <summary>An NVIDIA GPU through the CUDA backend (real or emulated).</summary>
    Cuda,
}

/// <summary>A device a tensor lives on: "cpu" or "cuda:N".</summary>
public readonly record struct Device(DeviceKind Kind, int Index = 0)
{
    /// <summary>The CPU.</summary>
    public static Device Cpu => new(DeviceKind.Cpu);

    /// <inheritdoc/>
    public override string ToString() => Kind == DeviceKind.Cpu ? "cpu" : $"cuda:{Index}";
}
