// traffic.cpp - counts the bytes of device memory a launch really reads and writes, each byte once, so that the
// cost each C# launcher declares (bytes read, bytes written) can be checked against what its kernel does.
//
// How: cxxflags builds the emulator with -fsanitize=kernel-address and outline instrumentation, so g++ turns every
// load and store the compiled code makes - a plain p[i], load<D>/store<D>, a vector load, an atomic - into a call
// of the __asan_{load,store}N_noabort hooks below before the access. No kernel can reach memory around them: the
// counting is the compiler's, not a helper's that a kernel might skip. While counting is off (always, outside a
// profile that asks for it) a hook is one load and a branch. While on, an address inside a live device allocation
// (guard.cpp's registry; shared memory, stacks and the runtime's own data are not device memory) marks its bytes in
// a per-allocation bitmap, one for reads and one for writes; a byte counts once per direction per launch, as the
// compulsory DRAM traffic a declaration states. Hooks run on the launching thread (fibers), under launch_mutex.
#include "guard.h"

#include <stdint.h>
#include <string.h>

#include <unordered_map>
#include <vector>

namespace
{
    struct Marks
    {
        std::vector<uint8_t> read, written; // one byte per byte of the allocation: 1 once touched this launch
    };

    bool counting;
    bool inside;                   // a hook is running: accesses of its own (instrumented library code) are not kernels'
    int64_t bytes_read, bytes_written;
    std::unordered_map<uintptr_t, Marks>* marks;

    __attribute__((no_sanitize_address)) void touch(uintptr_t address, size_t size, bool write)
    {
        if (!counting || inside) return;
        inside = true;
        uintptr_t start;
        int64_t length;
        for (size_t done = 0; done < size;)
        {
            // An access may straddle the end of an allocation (it then faults there); count what lies inside.
            if (!phi2_emu::guard_find_allocation(address + done, &start, &length)) { done++; continue; }
            Marks& m = (*marks)[start];
            std::vector<uint8_t>& bits = write ? m.written : m.read;
            if (bits.empty()) bits.assign((size_t)length, 0);
            size_t offset = address + done - start;
            for (; done < size && offset < (size_t)length; done++, offset++)
            {
                if (bits[offset]) continue;
                bits[offset] = 1;
                (write ? bytes_written : bytes_read)++;
            }
        }
        inside = false;
    }
}

extern "C"
{
#define PHI2_TRAFFIC_HOOKS(n)                                                                                      \
    __attribute__((visibility("default"), no_sanitize_address)) void __asan_load##n##_noabort(uintptr_t a)        \
    {                                                                                                              \
        touch(a, n, false);                                                                                        \
    }                                                                                                              \
    __attribute__((visibility("default"), no_sanitize_address)) void __asan_store##n##_noabort(uintptr_t a)       \
    {                                                                                                              \
        touch(a, n, true);                                                                                         \
    }
    PHI2_TRAFFIC_HOOKS(1)
    PHI2_TRAFFIC_HOOKS(2)
    PHI2_TRAFFIC_HOOKS(4)
    PHI2_TRAFFIC_HOOKS(8)
    PHI2_TRAFFIC_HOOKS(16)
#undef PHI2_TRAFFIC_HOOKS

    __attribute__((visibility("default"), no_sanitize_address)) void __asan_loadN_noabort(uintptr_t a, size_t n) { touch(a, n, false); }
    __attribute__((visibility("default"), no_sanitize_address)) void __asan_storeN_noabort(uintptr_t a, size_t n) { touch(a, n, true); }

    // The instrumentation's other calls: nothing to do (no shadow memory, no poisoned globals or stacks).
    __attribute__((visibility("default"))) void __asan_handle_no_return() {}
    __attribute__((visibility("default"))) void __asan_before_dynamic_init(const char*) {}
    __attribute__((visibility("default"))) void __asan_after_dynamic_init() {}

    // Starts (on != 0: zeroes the counts and forgets the marks) or stops counting. Call between launches.
    __attribute__((visibility("default"), no_sanitize_address)) void emu_count_traffic(int on)
    {
        std::lock_guard<std::mutex> guard(phi2_emu::launch_mutex);
        inside = true;
        delete marks;
        marks = on ? new std::unordered_map<uintptr_t, Marks>() : nullptr;
        bytes_read = bytes_written = 0;
        counting = on != 0;
        inside = false;
    }

    // The bytes counted since counting started: read and written, each byte once per direction.
    __attribute__((visibility("default"), no_sanitize_address)) void emu_traffic(int64_t* read, int64_t* written)
    {
        *read = bytes_read;
        *written = bytes_written;
    }
}
