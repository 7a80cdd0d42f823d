using System.Runtime.InteropServices;

namespace Phi2Native.Cuda;

/// <summary>
/// The kernel emulator's C entry points (kernels/emu/launch.cpp, kernels/emu/kernels.cpp), resolved through
/// <see cref="NativeLibraryResolver"/> like the CUDA libraries.
/// </summary>
internal static partial class EmulatorNative
{
    private const string Library = NativeLibraryResolver.Emulator;

    static EmulatorNative() => NativeLibraryResolver.EnsureRegistered();

    /// <summary>
    /// Runs kernel <paramref name="name"/> over the grid. <paramref name="args"/> is laid out as cuLaunchKernel's
    /// kernelParams: element i points at the value of parameter i. Returns 0, or non-zero with a message naming
    /// the kernel written (NUL-terminated) into <paramref name="errorBuffer"/>.
    /// </summary>
    [LibraryImport(Library, EntryPoint = "emu_launch", StringMarshalling = StringMarshalling.Utf8)]
    internal static unsafe partial int Launch(string name, uint gridX, uint gridY, uint gridZ, uint blockX, uint blockY, uint blockZ,
        int dynamicSharedBytes, void** args, byte* errorBuffer, int errorLength);

    /// <summary>
    /// Registers the host mapping [<paramref name="begin"/>, + <paramref name="bytes"/>) holding allocation
    /// <paramref name="id"/> (<paramref name="length"/> bytes at <paramref name="start"/>) with the emulator's fault
    /// handler, live (<paramref name="freed"/> = 0: only its guard pages fault) or freed (1: it faults anywhere), so a
    /// kernel's access there fails its launch naming the allocation. Registering at a registered begin replaces that
    /// registration. Returns 0, or non-zero when the range is empty or overlaps another registration.
    /// </summary>
    [LibraryImport(Library, EntryPoint = "emu_register_range")]
    internal static partial int RegisterRange(ulong begin, ulong bytes, long id, ulong start, long length, int freed);

    /// <summary>Forgets the registration at <paramref name="begin"/>; returns 0, or 1 when there was none.</summary>
    [LibraryImport(Library, EntryPoint = "emu_unregister_range")]
    internal static partial int UnregisterRange(ulong begin);

    /// <summary>Writes up to <paramref name="capacity"/> kernel names (static C strings) and returns how many the table holds.</summary>
    [LibraryImport(Library, EntryPoint = "emu_kernel_names")]
    internal static unsafe partial int KernelNames(nint* names, int capacity);

    /// <summary>Launches and turns a failure into an <see cref="InvalidOperationException"/> carrying the emulator's message.</summary>
    internal static unsafe void LaunchChecked(string name, (uint X, uint Y, uint Z) grid, (uint X, uint Y, uint Z) block,
        int dynamicSharedBytes, ReadOnlySpan<nint> argPointers)
    {
        const int errorLength = 1024;
        byte* error = stackalloc byte[errorLength];
        error[0] = 0;
        fixed (nint* args = argPointers)
        {
            int rc = Launch(name, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, dynamicSharedBytes, (void**)args, error, errorLength);
            if (rc != 0) throw new InvalidOperationException(Marshal.PtrToStringUTF8((nint)error) ?? $"emulated launch of {name} failed");
        }
    }

    /// <summary>The names of every kernel the emulator can launch.</summary>
    internal static unsafe IReadOnlyList<string> KernelNames()
    {
        int count = KernelNames(null, 0);
        var names = new nint[count];
        fixed (nint* p = names) KernelNames(p, count);
        return names.Select(n => Marshal.PtrToStringUTF8(n)!).ToList();
    }
}
