using System.Runtime.InteropServices;

namespace Phi2Native.Cuda.Emulator;

/// <summary>
/// Page-granular host memory for <see cref="EmulatedDevice"/>: mmap, mprotect and munmap from libc (Linux, like
/// the emulator itself). Reserved pages are PROT_NONE - any access faults, which is what the emulator's guard
/// pages and freed allocations need - and committed pages are readable and writable.
/// </summary>
internal static unsafe partial class HostPages
{
    private const int ProtNone = 0, ProtRead = 1, ProtWrite = 2;
    private const int MapPrivate = 0x02, MapFixed = 0x10, MapAnonymous = 0x20, MapNoReserve = 0x4000;
    private static readonly nint MapFailed = -1;

    /// <summary>The host's page size in bytes (4096 on x86-64 Linux).</summary>
    public static int PageSize { get; } = Environment.SystemPageSize;

    /// <summary>Reserves <paramref name="bytes"/> (a multiple of <see cref="PageSize"/>) of inaccessible address space, or returns null.</summary>
    /// <remarks>PROT_NONE private pages count against no commit limit and occupy no memory.</remarks>
    public static byte* Reserve(long bytes)
    {
        nint p = Mmap(0, (nuint)bytes, ProtNone, MapPrivate | MapAnonymous | MapNoReserve, -1, 0);
        return p == MapFailed ? null : (byte*)p;
    }

    /// <summary>Makes reserved pages readable and writable (zero-filled on first touch); false when the host refuses the memory.</summary>
    public static bool Commit(byte* pages, long bytes) => Mprotect((nint)pages, (nuint)bytes, ProtRead | ProtWrite) == 0;

    /// <summary>
    /// Returns pages to the reserved state: their memory is given back to the host and any access faults again,
    /// while the address range stays taken (a fresh PROT_NONE mapping replaces the old one in place).
    /// </summary>
    public static bool Decommit(byte* pages, long bytes) =>
        Mmap((nint)pages, (nuint)bytes, ProtNone, MapPrivate | MapAnonymous | MapNoReserve | MapFixed, -1, 0) == (nint)pages;

    /// <summary>Unmaps a range returned by <see cref="Reserve"/>.</summary>
    public static void Release(byte* pages, long bytes) => Munmap((nint)pages, (nuint)bytes);

    /// <summary><paramref name="bytes"/> rounded up to a multiple of <paramref name="unit"/> (a power of two).</summary>
    public static long RoundUp(long bytes, long unit) => (bytes + unit - 1) & ~(unit - 1);

    [LibraryImport("libc", EntryPoint = "mmap", SetLastError = true)]
    private static partial nint Mmap(nint address, nuint length, int protection, int flags, int fd, nint offset);

    [LibraryImport("libc", EntryPoint = "mprotect", SetLastError = true)]
    private static partial int Mprotect(nint address, nuint length, int protection);

    [LibraryImport("libc", EntryPoint = "munmap", SetLastError = true)]
    private static partial int Munmap(nint address, nuint length);
}
