namespace Phi2Native.Cuda.Emulator;

// How the emulated device lays out and guards its memory. Each allocation is a mapping of its own:
//
//   | PROT_NONE page | guard bytes (gap) | user bytes (Length) | guard bytes (slack) | PROT_NONE page |
//                    ^ DataStart         ^ Start               ^ End                 ^ DataEnd
//
// The user bytes end Length rounded up to Alignment (16) before the trailing guard page, so a read or write
// just past the end faults at once (the emulator's handler fails the launch naming the allocation) and
// pointers stay aligned for vector loads. The slack (0..15 bytes) and the gap (what rounding the size up to
// whole pages leaves before the start, less than a page) hold the guard pattern: checked after every launch
// and on free, so a store there fails too, and a NaN in fp32, bf16 and fp16, so a load there shows as NaN.
// A freed allocation is turned PROT_NONE as a whole (its memory goes back to the host) and stays registered
// with the emulator as freed while it is quarantined, so a kernel touching it faults as well.
public sealed unsafe partial class EmulatedDevice
{
    // At most this many freed allocations are kept: each is a kernel mapping (a VMA; Linux allows 65530).
    private const int MaxQuarantinedAllocations = 4096;

    private sealed class Block
    {
        public required long Id;
        public required byte* Base;        // the mapping: leading guard page, data pages, trailing guard page
        public required long MapBytes;
        public required ulong Start;       // the user pointer
        public required long Length;       // requested bytes
        public bool HeldForGraph;          // freed by its owner, kept mapped and live for a graph's replays
        public ulong End => Start + (ulong)Length;
        public byte* DataStart => Base + HostPages.PageSize;
        public byte* DataEnd => Base + MapBytes - HostPages.PageSize;
        public long GapBytes => (long)(Start - (ulong)DataStart);
        public long SlackBytes => (long)((ulong)DataEnd - End);
        public override string ToString() => $"allocation #{Id} of {Length} bytes at 0x{Start:x}";
    }

    // Maps, fills and registers a new allocation; throws when the host refuses the memory.
    private Block MapBlock(long bytes)
    {
        long page = HostPages.PageSize;
        if (bytes > long.MaxValue / 4) throw new EmulatedDeviceException(nameof(Allocate), $"out of host memory for {bytes} bytes");
        long data = HostPages.RoundUp(HostPages.RoundUp(bytes, Alignment), page);
        long map = data + 2 * page;
        byte* b = HostPages.Reserve(map);
        if (b == null || !HostPages.Commit(b + page, data))
        {
            if (b != null) HostPages.Release(b, map);
            throw new EmulatedDeviceException(nameof(Allocate), $"out of host memory for {bytes} bytes");
        }
        var block = new Block
        {
            Id = _total + 1, Base = b, MapBytes = map, Start = (ulong)(b + page + data - HostPages.RoundUp(bytes, Alignment)), Length = bytes,
        };
        RepairGuards(block);
        Fill((byte*)block.Start, bytes, FreshByte);
        if (Emulator.RegisterRange((ulong)b, (ulong)map, block.Id, block.Start, bytes, freed: false) != 0)
        {
            HostPages.Release(b, map);
            throw new EmulatedDeviceException(nameof(Allocate), $"the emulator refused to register {block}: it overlaps a registered range");
        }
        _total++;
        return block;
    }

    // The guard pattern: GuardBits at every even address, so every aligned 2- or 4-byte load of it is a NaN.
    private static readonly byte[] GuardPattern = MakeGuardPattern();

    private static byte[] MakeGuardPattern()
    {
        // One page and one byte: enough for any gap or slack at either address parity.
        var pattern = new byte[HostPages.PageSize + 2];
        for (int i = 0; i < pattern.Length; i += 2)
        {
            pattern[i] = unchecked((byte)GuardBits);
            pattern[i + 1] = (byte)(GuardBits >> 8);
        }
        return pattern;
    }

    private static ReadOnlySpan<byte> ExpectedGuard(byte* at, long bytes) => GuardPattern.AsSpan((int)((ulong)at & 1), (int)bytes);

    // Where a store has overwritten the guard bytes of a block, or null when they are intact.
    private static string? GuardDamage(Block b)
    {
        var gap = new ReadOnlySpan<byte>(b.DataStart, (int)b.GapBytes);
        int before = gap.CommonPrefixLength(ExpectedGuard(b.DataStart, b.GapBytes));
        if (before < gap.Length)
        {
            // The last differing byte is the one closest to the start: report it as the offset a kernel used.
            int last = gap.Length - 1;
            ReadOnlySpan<byte> expected = ExpectedGuard(b.DataStart, b.GapBytes);
            while (gap[last] == expected[last]) last--;
            return $"byte {last - gap.Length} (before its start) was overwritten";
        }
        var slack = new ReadOnlySpan<byte>((byte*)b.End, (int)b.SlackBytes);
        int after = slack.CommonPrefixLength(ExpectedGuard((byte*)b.End, b.SlackBytes));
        if (after < slack.Length) return $"byte {b.Length + after} (offset {after} past its end) was overwritten";
        return null;
    }

    private static void RepairGuards(Block b)
    {
        ExpectedGuard(b.DataStart, b.GapBytes).CopyTo(new Span<byte>(b.DataStart, (int)b.GapBytes));
        ExpectedGuard((byte*)b.End, b.SlackBytes).CopyTo(new Span<byte>((byte*)b.End, (int)b.SlackBytes));
    }

    // After a launch (failed or not): the guard bytes of every live allocation must be intact, since a store into
    // them does not fault. Repairs every damaged block - so the next launch is not blamed for this one's stores -
    // and describes the first, or returns null.
    private string? GuardReport()
    {
        string? first = null;
        int more = 0;
        foreach (Block b in _live)
        {
            if (GuardDamage(b) is not { } damage) continue;
            RepairGuards(b);
            if (first is null) first = $"wrote out of bounds of {b}: {damage}";
            else more++;
        }
        return first is null || more == 0 ? first : $"{first} (and out of bounds of {more} more allocation(s))";
    }

    private void Quarantine(Block block)
    {
        // Freed as far as the kernel's pages go, but the address range stays taken and registered as freed, so a
        // dangling pointer cannot reach a newer allocation and a kernel using one faults naming this one.
        Emulator.RegisterRange((ulong)block.Base, (ulong)block.MapBytes, block.Id, block.Start, block.Length, freed: true);
        HostPages.Decommit(block.Base, block.MapBytes);
        _quarantine.AddLast(block);
        _quarantined += block.Length;
        // Release the oldest first: a dangling pointer is most likely to be used soon after its free.
        while ((_quarantined > _quarantineLimit || _quarantine.Count > MaxQuarantinedAllocations) && _quarantine.First is { } oldest)
        {
            _quarantine.RemoveFirst();
            _quarantined -= oldest.Value.Length;
            Unmap(oldest.Value);
        }
    }

    private void Unmap(Block block)
    {
        // Unregister first: once unmapped, the range may be handed to anyone, and a fault there is not ours.
        Emulator.UnregisterRange((ulong)block.Base);
        HostPages.Release(block.Base, block.MapBytes);
    }
}
