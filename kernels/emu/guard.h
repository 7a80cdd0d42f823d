// guard.h - catching a kernel's out-of-bounds and use-after-free accesses (guard.cpp).
//
// EmulatedDevice maps every allocation between two PROT_NONE guard pages, turns freed (quarantined)
// allocations PROT_NONE as a whole, and registers each mapping here (emu_register_range). A SIGSEGV or
// SIGBUS raised by fiber code during a launch is then the kernel's doing: the handler records the address
// and resumes the faulting fiber in the function given to guard_begin_launch, which fails the launch with
// guard_fault_message() - so the first bad access stops its thread, and the message names the kernel,
// block, thread, allocation and offset. Every other fault goes to the handler installed before ours (the
// .NET runtime's, which turns managed null dereferences into NullReferenceException).
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <mutex>
#include <string>

namespace phi2_emu
{
    // Serializes launches process-wide, and guards the range registry: registration takes it, so the
    // registry never changes while a launch (and so the fault handler) may read it.
    extern std::mutex launch_mutex;

    // Installs the SIGSEGV/SIGBUS handler, once. Call with launch_mutex held.
    void guard_install();

    // Arms the handler for the calling thread's launch; its fibers run on [stacks, stacks + bytes), in slots of
    // slot_bytes that each begin with guard_bytes of PROT_NONE guard page. A fault raised there, or in a guard
    // page (a stack overflow, reported as such), resumes the faulting fiber in on_fault - at the top of its own
    // slot after an overflow - which must fail the launch (never return).
    // Call with launch_mutex held; guard_end_launch disarms.
    void guard_begin_launch(const void* stacks, size_t bytes, size_t slot_bytes, size_t guard_bytes, void (*on_fault)());
    void guard_end_launch();

    // The launch's dynamic shared memory: the mapping [map, map + map_bytes) holds the `launched_bytes` buffer
    // at start, between PROT_NONE guard pages; a fault in the mapping is reported as a dynamic shared memory
    // access out of bounds. map == nullptr: the launch has none. Call with launch_mutex held.
    void guard_set_dynamic_shared(const void* map, size_t map_bytes, const void* start, size_t launched_bytes);

    // The last fault the handler caught, e.g. "read out of bounds: byte 4000 (0 past the end) of
    // allocation #3 of 4000 bytes at 0x7f...". Call from on_fault, on the faulting fiber.
    std::string guard_fault_message();

    // The live allocation holding `address`: [start, start + bytes) of a registration not freed (traffic.cpp counts
    // a kernel's device-memory accesses with it). Call with launch_mutex held.
    bool guard_find_allocation(uintptr_t address, uintptr_t* start, int64_t* bytes);
}
