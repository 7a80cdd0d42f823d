namespace Phi2Native.Cuda.Resources;

/// <summary>
/// What limits how many blocks of a kernel one SM holds at once, per architecture (CUDA C++ Programming Guide,
/// "Compute Capabilities", and the occupancy calculator's allocation rules). Only the architectures the engine
/// compiles for in CI are listed; a GPU run reads the real figures from the driver.
/// </summary>
/// <param name="Name">The NVRTC architecture, e.g. <c>sm_90</c>.</param>
/// <param name="RegistersPerSm">32-bit registers in one SM's register file, split evenly over its four schedulers.</param>
/// <param name="RegisterUnit">Registers are allocated to a warp in units of this many (so per thread in eighths of it).</param>
/// <param name="SharedPerSm">Shared memory one SM can give its blocks, at the largest carveout.</param>
/// <param name="SharedPerBlockOptIn">The most shared memory (static + dynamic) one block may use after opting in.</param>
/// <param name="SharedReservedPerBlock">Shared memory the system reserves for each resident block.</param>
/// <param name="SharedUnit">Shared memory is allocated to a block in units of this many bytes.</param>
/// <param name="ThreadsPerSm">Resident threads per SM at most.</param>
/// <param name="BlocksPerSm">Resident blocks per SM at most.</param>
internal sealed record GpuArchitecture(string Name, int RegistersPerSm, int RegisterUnit, int SharedPerSm, int SharedPerBlockOptIn,
    int SharedReservedPerBlock, int SharedUnit, int ThreadsPerSm, int BlocksPerSm)
{
    /// <summary>Threads in a warp, on every architecture.</summary>
    public const int WarpSize = 32;

    /// <summary>Schedulers (sub-partitions) per SM; a warp's registers come from its scheduler's quarter of the file.</summary>
    public const int SchedulersPerSm = 4;

    /// <summary>
    /// Static plus dynamic shared memory a block may use without opting in (CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES);
    /// past it the launch fails unless the function's attribute was raised.
    /// </summary>
    public const int SharedPerBlockDefault = 48 * 1024;

    /// <summary>Hopper (H100, H200): 228 KiB of shared memory per SM, 227 KiB per block.</summary>
    public static GpuArchitecture Sm90 { get; } = new("sm_90", 65536, 256, 228 * 1024, 227 * 1024, 1024, 128, 2048, 32);

    /// <summary>Ampere A100: 164 KiB of shared memory per SM, 163 KiB per block.</summary>
    public static GpuArchitecture Sm80 { get; } = new("sm_80", 65536, 256, 164 * 1024, 163 * 1024, 1024, 128, 2048, 32);

    /// <summary>The architectures CI compiles every kernel for, the reference device's first.</summary>
    public static IReadOnlyList<GpuArchitecture> Compiled { get; } = [Sm90, Sm80];

    /// <summary>Warps resident per SM at most.</summary>
    public int WarpsPerSm => ThreadsPerSm / WarpSize;

    /// <summary>The architecture named <paramref name="name"/> (<c>sm_90</c>, <c>sm_80</c>).</summary>
    /// <exception cref="ArgumentException">Not one of <see cref="Compiled"/>.</exception>
    public static GpuArchitecture Named(string name) =>
        Compiled.FirstOrDefault(a => a.Name == name)
        ?? throw new ArgumentException($"no occupancy figures for '{name}'; known: {string.Join(", ", Compiled.Select(a => a.Name))}", nameof(name));
}
