using System.Globalization;
using Phi2Native.Backends.Cpu;
using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Tensors;

namespace Phi2Native.Hosting;

/// <summary>
/// Where a model computes, as a user names it: <c>cpu</c>, <c>cuda</c> / <c>cuda:N</c> (GPU N) or <c>emulated</c>
/// (the CUDA backend over the kernel emulator). <see cref="CreateBackend"/> turns it into an <see cref="IBackend"/>.
/// </summary>
/// <remarks>
/// The choice is plain data, so hosts and the command line can parse and print it before anything is opened;
/// opening a GPU (and failing to, on a machine without one) happens only in <see cref="CreateBackend"/>.
/// </remarks>
public sealed record DeviceChoice
{
    private DeviceChoice(DeviceKind kind, int ordinal)
    {
        Kind = kind;
        Ordinal = ordinal;
    }

    /// <summary>What the text said: <c>cpu</c>, <c>cuda</c> or <c>emulated</c>.</summary>
    public DeviceKind Kind { get; }

    /// <summary>The GPU's index for <see cref="DeviceKind.Cuda"/>; 0 otherwise.</summary>
    public int Ordinal { get; }

    /// <summary>The CPU backend (the default).</summary>
    public static DeviceChoice Cpu { get; } = new(DeviceKind.Cpu, 0);

    /// <summary>The CUDA backend over the kernel emulator: slow, for checking the CUDA path without a GPU.</summary>
    public static DeviceChoice Emulated { get; } = new(DeviceKind.Emulated, 0);

    /// <summary>The CUDA backend on GPU <paramref name="ordinal"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="ordinal"/> is negative.</exception>
    public static DeviceChoice Cuda(int ordinal = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(ordinal);
        return new DeviceChoice(DeviceKind.Cuda, ordinal);
    }

    /// <summary>The choice that names <paramref name="device"/> (a backend's <see cref="IBackend.Device"/>).</summary>
    public static DeviceChoice Of(Device device) => device.Kind switch
    {
        DeviceKind.Cpu => Cpu,
        DeviceKind.Emulated => Emulated,
        _ => Cuda(device.Index),
    };

    /// <summary>The accepted spellings, for messages: "cpu, cuda, cuda:N, emulated".</summary>
    public const string Spellings = "cpu, cuda, cuda:N (GPU N, from 0), emulated";

    /// <summary>Reads <c>cpu</c>, <c>cuda</c>, <c>cuda:N</c> or <c>emulated</c> (case-insensitive, surrounding blanks ignored).</summary>
    /// <returns>False for anything else, e.g. <c>tpu</c>, <c>cuda:</c> or <c>cuda:-1</c>.</returns>
    public static bool TryParse(string? text, out DeviceChoice choice)
    {
        choice = Cpu;
        string value = text?.Trim().ToLowerInvariant() ?? "";
        switch (value)
        {
            case "cpu": return true;
            case "cuda": choice = Cuda(0); return true;
            case "emulated": choice = Emulated; return true;
        }
        if (value.StartsWith("cuda:", StringComparison.Ordinal)
            && int.TryParse(value.AsSpan(5), NumberStyles.None, CultureInfo.InvariantCulture, out int ordinal))
        {
            choice = Cuda(ordinal);
            return true;
        }
        return false;
    }

    /// <summary>Reads a device as <see cref="TryParse"/> does.</summary>
    /// <exception cref="FormatException"><paramref name="text"/> is not one of the <see cref="Spellings"/>.</exception>
    public static DeviceChoice Parse(string text) =>
        TryParse(text, out var choice) ? choice : throw new FormatException($"\"{text}\" is not a device: expected one of {Spellings}");

    /// <summary>
    /// The backend for this choice. <see cref="DeviceKind.Cpu"/> gives the shared <see cref="CpuBackend.Default"/>
    /// (see <see cref="OwnsBackend"/>); the CUDA choices give a new <see cref="CudaBackend"/> that owns its device: the
    /// caller disposes it, after the models on it, to free the device memory.
    /// </summary>
    /// <param name="kernelSources">
    /// For the CUDA choices: a folder of kernel sources to use instead of the embedded ones (<see cref="KernelSourceOptions"/>);
    /// null reads <c>PHI2NATIVE_KERNEL_SOURCES</c>. The CPU ignores it.
    /// </param>
    /// <exception cref="Phi2Exception">
    /// CUDA is unavailable here (the message is the probe's reason), there is no GPU <see cref="Ordinal"/>, the kernel
    /// emulator's library cannot be loaded, or the kernel source folder is unusable (missing, empty, or, emulated, not compiling).
    /// </exception>
    public IBackend CreateBackend(KernelSourceOptions? kernelSources = null) => Open(kernelSources).Backend;

    /// <summary>Opens the backend as <see cref="CreateBackend"/> does, with what its device says it is (e.g. "NVIDIA H200 (sm_90)"), or null for the CPU.</summary>
    internal (IBackend Backend, string? DeviceName) Open(KernelSourceOptions? kernelSources)
    {
        if (Kind == DeviceKind.Cpu) return (CpuBackend.Default, null);
        var cuda = Kind == DeviceKind.Cuda ? CudaBackend.OpenGpu(Ordinal, kernelSources) : CudaBackend.OpenEmulated(kernelSources);
        return (cuda, cuda.DeviceApi.Name);
    }

    /// <summary>
    /// True when the caller of <see cref="CreateBackend"/> owns (and must dispose) the backend: every choice but the CPU,
    /// whose backend is the process-wide shared one.
    /// </summary>
    public bool OwnsBackend => Kind != DeviceKind.Cpu;

    /// <summary>The device a backend opened for this choice computes on (what its tensors' <see cref="Tensor.Device"/> says).</summary>
    public Device Device => new(Kind, Ordinal);

    /// <summary><c>cpu</c>, <c>cuda:N</c> or <c>emulated</c>: text that <see cref="Parse"/> reads back, spelled as <see cref="Tensors.Device"/> spells it.</summary>
    public override string ToString() => Device.ToString();
}
