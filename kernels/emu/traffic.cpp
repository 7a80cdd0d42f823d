// traffic.cpp - counts the bytes of device memory a launch really reads and writes, each byte once, so that the
// cost each C# launcher declares (bytes read, bytes written) can be checked against what its kernel does.
//
// How: cxxflags builds the emulator with -fsanitize=thread (without its runtime: these hooks stand in for it), so g++
// turns every load and store the compiled code makes - a plain p[i], load<D>/store<D>, a vector load, an emulated
// atomic - into a call of the __tsan_{read,write}N hooks below before the access. (AddressSanitizer's hooks would not
// do: its check of a load covers a store to the same address after it, so read-modify-writes would count no write.) No kernel can reach memory around them: the
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

    __attribute__((no_sanitize_thread)) void touch(uintptr_t address, size_t size, bool write)
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
    __attribute__((visibility("default"), no_sanitize_thread)) void __tsan_read##n(void* a)                        \
    {                                                                                                              \
        touch((uintptr_t)a, n, false);                                                                             \
    }                                                                                                              \
    __attribute__((visibility("default"), no_sanitize_thread)) void __tsan_write##n(void* a)                       \
    {                                                                                                              \
        touch((uintptr_t)a, n, true);                                                                              \
    }                                                                                                              \
    __attribute__((visibility("default"), no_sanitize_thread)) void __tsan_unaligned_read##n(void* a)              \
    {                                                                                                              \
        touch((uintptr_t)a, n, false);                                                                             \
    }                                                                                                              \
    __attribute__((visibility("default"), no_sanitize_thread)) void __tsan_unaligned_write##n(void* a)             \
    {                                                                                                              \
        touch((uintptr_t)a, n, true);                                                                              \
    }
    PHI2_TRAFFIC_HOOKS(1)
    PHI2_TRAFFIC_HOOKS(2)
    PHI2_TRAFFIC_HOOKS(4)
    PHI2_TRAFFIC_HOOKS(8)
    PHI2_TRAFFIC_HOOKS(16)
#undef PHI2_TRAFFIC_HOOKS

    __attribute__((visibility("default"), no_sanitize_thread)) void __tsan_read_range(void* a, size_t n) { touch((uintptr_t)a, n, false); }
    __attribute__((visibility("default"), no_sanitize_thread)) void __tsan_write_range(void* a, size_t n) { touch((uintptr_t)a, n, true); }

    // The instrumentation's other calls. Nothing to set up; the runtime's own atomics (guard.cpp's flags) stay atomic,
    // at the strongest order (TSan's memory-order numbers are the __ATOMIC_* ones).
    __attribute__((visibility("default"))) void __tsan_init() {}
    __attribute__((visibility("default"), no_sanitize_thread)) unsigned char __tsan_atomic8_load(const volatile unsigned char* a, int)
    {
        return __atomic_load_n(a, __ATOMIC_SEQ_CST);
    }
    __attribute__((visibility("default"), no_sanitize_thread)) void __tsan_atomic8_store(volatile unsigned char* a, unsigned char v, int)
    {
        __atomic_store_n(a, v, __ATOMIC_SEQ_CST);
    }
    __attribute__((visibility("default"), no_sanitize_thread)) unsigned long long __tsan_atomic64_load(const volatile unsigned long long* a, int)
    {
        return __atomic_load_n(a, __ATOMIC_SEQ_CST);
    }
    __attribute__((visibility("default"), no_sanitize_thread)) void __tsan_atomic64_store(volatile unsigned long long* a, unsigned long long v, int)
    {
        __atomic_store_n(a, v, __ATOMIC_SEQ_CST);
    }

    // Starts (on != 0: zeroes the counts and forgets the marks) or stops counting. Call between launches.
    __attribute__((visibility("default"), no_sanitize_thread)) void emu_count_traffic(int on)
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
    __attribute__((visibility("default"), no_sanitize_thread)) void emu_traffic(int64_t* read, int64_t* written)
    {
        *read = bytes_read;
        *written = bytes_written;
    }
}
