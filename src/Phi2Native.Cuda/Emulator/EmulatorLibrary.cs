using System.Runtime.InteropServices;
using System.Text;
using Phi2Native.Cuda.Native;

namespace Phi2Native.Cuda.Emulator;

/// <summary>
/// One loaded kernel emulator library (kernels/emu/launch.cpp, guard.cpp, kernels.cpp) and its C entry points, bound as
/// function pointers so that one process can hold several: the one the build put beside this assembly
/// (<see cref="Default"/>) and any built at run time from edited kernel sources (<see cref="EmulatorBuilder"/>). An
/// <see cref="EmulatedDevice"/> registers its memory with, and launches through, the library it was opened on.
/// </summary>
/// <remarks>
/// A library is never unloaded: each installs a SIGSEGV/SIGBUS handler that chains to the one installed before it,
/// and a later library's handler may chain to it. Several libraries coexist because each keeps its own registered
/// ranges, fiber stacks and launch lock, and a handler takes only faults on its own launch's fiber stacks.
/// </remarks>
internal sealed unsafe class EmulatorLibrary
{
    private static readonly Lazy<EmulatorLibrary> DefaultOnce = new(LoadDefault, LazyThreadSafetyMode.ExecutionAndPublication);

    private readonly delegate* unmanaged<byte*, uint, uint, uint, uint, uint, uint, int, void**, byte*, int, int> _launch;
    private readonly delegate* unmanaged<ulong, ulong, long, ulong, long, int, int> _registerRange;
    private readonly delegate* unmanaged<ulong, int> _unregisterRange;
    private readonly delegate* unmanaged<nint*, int, int> _kernelNames;
    private readonly delegate* unmanaged<int, void> _countTraffic;
    private readonly delegate* unmanaged<long*, long*, void> _traffic;
    private readonly delegate* unmanaged<byte*, int*, int, int> _kernelParameters;

    /// <summary>Binds the entry points of the library <paramref name="handle"/>, loaded from <paramref name="path"/>.</summary>
    /// <exception cref="EntryPointNotFoundException">The library lacks an entry point: it is not a kernel emulator.</exception>
    internal EmulatorLibrary(nint handle, string path)
    {
        Path = path;
        _launch = (delegate* unmanaged<byte*, uint, uint, uint, uint, uint, uint, int, void**, byte*, int, int>)Export(handle, path, "emu_launch");
        _registerRange = (delegate* unmanaged<ulong, ulong, long, ulong, long, int, int>)Export(handle, path, "emu_register_range");
        _unregisterRange = (delegate* unmanaged<ulong, int>)Export(handle, path, "emu_unregister_range");
        _kernelNames = (delegate* unmanaged<nint*, int, int>)Export(handle, path, "emu_kernel_names");
        _countTraffic = (delegate* unmanaged<int, void>)Export(handle, path, "emu_count_traffic");
        _traffic = (delegate* unmanaged<long*, long*, void>)Export(handle, path, "emu_traffic");
        _kernelParameters = (delegate* unmanaged<byte*, int*, int, int>)Export(handle, path, "emu_kernel_parameters");
    }

    /// <summary>The emulator the build made beside this assembly (<see cref="NativeLibraryResolver.Emulator"/>), loaded once.</summary>
    /// <exception cref="DllNotFoundException">It does not load; the message says why (missing, or built for another platform).</exception>
    internal static EmulatorLibrary Default => DefaultOnce.Value;

    /// <summary>The file the library was loaded from.</summary>
    internal string Path { get; }

    private static EmulatorLibrary LoadDefault()
    {
        var outcome = NativeLibraryResolver.Load(NativeLibraryResolver.Emulator);
        if (outcome.Handle == 0) throw new DllNotFoundException($"the kernel emulator cannot be loaded: {outcome.Failure}");
        return new EmulatorLibrary(outcome.Handle, outcome.LoadedFrom!);
    }

    private static nint Export(nint handle, string path, string name) =>
        NativeLibrary.TryGetExport(handle, name, out nint address)
            ? address
            : throw new EntryPointNotFoundException($"{path} has no {name}: it is not a kernel emulator library");

    /// <summary>
    /// Runs kernel <paramref name="name"/> over the grid. <paramref name="argPointers"/> is laid out as cuLaunchKernel's
    /// kernelParams: element i points at the value of parameter i. A failure (the emulator's message names the kernel,
    /// block and thread) is an <see cref="InvalidOperationException"/>.
    /// </summary>
    internal void LaunchChecked(string name, (uint X, uint Y, uint Z) grid, (uint X, uint Y, uint Z) block,
        int dynamicSharedBytes, ReadOnlySpan<nint> argPointers)
    {
        const int errorLength = 1024;
        byte* error = stackalloc byte[errorLength];
        error[0] = 0;
        byte[] utf8Name = Encoding.UTF8.GetBytes(name + "\0");
        int rc;
        fixed (byte* n = utf8Name)
        fixed (nint* args = argPointers)
            rc = _launch(n, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, dynamicSharedBytes, (void**)args, error, errorLength);
        if (rc != 0) throw new InvalidOperationException(Marshal.PtrToStringUTF8((nint)error) ?? $"emulated launch of {name} failed");
    }

    /// <summary>
    /// Registers the host mapping [<paramref name="begin"/>, + <paramref name="bytes"/>) holding allocation
    /// <paramref name="id"/> (<paramref name="length"/> bytes at <paramref name="start"/>) with the emulator's fault
    /// handler, live (<paramref name="freed"/> false: only its guard pages fault) or freed (true: it faults anywhere), so a
    /// kernel's access there fails its launch naming the allocation. Registering at a registered begin replaces that
    /// registration. Returns 0, or non-zero when the range is empty or overlaps another registration.
    /// </summary>
    internal int RegisterRange(ulong begin, ulong bytes, long id, ulong start, long length, bool freed) =>
        _registerRange(begin, bytes, id, start, length, freed ? 1 : 0);

    /// <summary>Forgets the registration at <paramref name="begin"/>; returns 0, or 1 when there was none.</summary>
    internal int UnregisterRange(ulong begin) => _unregisterRange(begin);

    /// <summary>
    /// Starts (zeroing the counts) or stops counting the device memory launches read and write (kernels/emu/traffic.cpp:
    /// every load and store of kernel code, as g++ instrumented it, that lands in a live allocation; each byte once).
    /// </summary>
    internal void CountTraffic(bool on) => _countTraffic(on ? 1 : 0);

    /// <summary>The bytes read and written since counting started.</summary>
    internal (long Read, long Written) LastTraffic()
    {
        long read, written;
        _traffic(&read, &written);
        return (read, written);
    }

    /// <summary>The size in bytes of each parameter of kernel <paramref name="name"/> (from its signature), or null when there is no such kernel.</summary>
    internal int[]? ParameterSizes(string name)
    {
        byte[] utf8Name = Encoding.UTF8.GetBytes(name + "\0");
        fixed (byte* n = utf8Name)
        {
            int count = _kernelParameters(n, null, 0);
            if (count < 0) return null;
            var sizes = new int[count];
            fixed (int* p = sizes) _kernelParameters(n, p, count);
            return sizes;
        }
    }

    /// <summary>The names of every kernel the library can launch, in its table's order.</summary>
    internal IReadOnlyList<string> KernelNames()
    {
        int count = _kernelNames(null, 0);
        var names = new nint[count];
        fixed (nint* p = names) _kernelNames(p, count);
        return names.Select(n => Marshal.PtrToStringUTF8(n)!).ToList();
    }
}
