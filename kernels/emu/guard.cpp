// guard.cpp - the fault handler and the registry of guarded ranges (see guard.h): a kernel's read or write
// of a guard page, of freed memory or of no memory at all fails its launch instead of the process.
//
// Whose fault is it? Ours exactly when the faulting thread is the one running a launch and its stack
// pointer lies in that launch's fiber stacks: only kernel code (and the emulator's own, which touches no
// device memory) runs there. The check reads no thread_local - launch.cpp fills this library's TLS block
// with 0xFF before every block - only globals written under launch_mutex before the handler is armed.
// Every other fault is chained to the handler that was installed before ours, with its own arguments.
#include "guard.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <ucontext.h>

#include <atomic>
#include <vector>

namespace phi2_emu
{
std::mutex launch_mutex;

namespace
{
    // One registered mapping: [begin, end) as mapped, and the allocation it holds, as EmulatedDevice names it
    // ("allocation #id of bytes bytes at 0xstart"). A live allocation faults only in its guard pages, a freed
    // one anywhere.
    struct Range
    {
        uintptr_t begin, end;
        int64_t id;
        uintptr_t start;
        int64_t bytes;
        bool freed;
    };

    // Sorted by begin, disjoint. Changed only under launch_mutex, read by the handler only on the thread that
    // holds it for a launch, so the handler never sees it mid-change and the handler takes no lock.
    std::vector<Range> ranges;

    enum class Access { Read, Write, Unknown };

    struct Fault
    {
        bool pending;      // caught, and its fiber sent to on_fault; a second fault then is not ours
        uintptr_t address;
        Access access;
        bool registered;   // whether range below is meaningful
        Range range;
        bool shared;       // in the dynamic shared memory mapping (range unused)
        bool overflow;     // in a fiber stack's guard page: a stack overflow (range unused)
    };

    // The armed launch. launch_thread and the stack range are stored before `armed` (release), so a handler
    // that sees armed (acquire) sees the thread they belong to.
    std::atomic<bool> armed{ false };
    std::atomic<pthread_t> launch_thread{};
    uintptr_t stacks_begin, stacks_end;
    size_t stack_slot, stack_guard;

    bool in_stack_guard(uintptr_t address)
    {
        return address >= stacks_begin && address < stacks_end && (address - stacks_begin) % stack_slot < stack_guard;
    }
    void (*fault_target)();
    Fault fault;

    // The launch's dynamic shared memory mapping (guard_set_dynamic_shared).
    uintptr_t shared_map_begin, shared_map_end, shared_start;
    size_t shared_bytes;

    struct sigaction previous[2]; // SIGSEGV, SIGBUS: what was installed before us
    bool installed;

    const Range* find(uintptr_t address)
    {
        // The first range ending after the address is the only one that can hold it. No allocation: the
        // handler calls this.
        size_t lo = 0, hi = ranges.size();
        while (lo < hi)
        {
            size_t mid = (lo + hi) / 2;
            if (ranges[mid].end <= address) lo = mid + 1; else hi = mid;
        }
        return lo < ranges.size() && ranges[lo].begin <= address ? &ranges[lo] : nullptr;
    }

#if defined(__x86_64__)
    uintptr_t interrupted_sp(void* context) { return (uintptr_t)static_cast<ucontext_t*>(context)->uc_mcontext.gregs[REG_RSP]; }
    // The page-fault error code's bit 1: the access was a write.
    Access access_of(void* context)
    {
        return (static_cast<ucontext_t*>(context)->uc_mcontext.gregs[REG_ERR] & 2) ? Access::Write : Access::Read;
    }
#else
    uintptr_t interrupted_sp(void*) { return 0; } // unknown: the thread check alone decides
    Access access_of(void*) { return Access::Unknown; }
#endif

    // Hands the fault to the handler installed before ours, as the kernel would have.
    void chain(int sig, siginfo_t* info, void* context)
    {
        const struct sigaction& p = previous[sig == SIGBUS];
        void* handler = (p.sa_flags & SA_SIGINFO) ? (void*)p.sa_sigaction : (void*)p.sa_handler;
        if (handler != (void*)SIG_DFL && handler != (void*)SIG_IGN)
        {
            if (p.sa_flags & SA_SIGINFO) p.sa_sigaction(sig, info, context);
            else p.sa_handler(sig);
            return;
        }
        // Nobody before us (ignoring a fault would re-execute it forever): restore the default action and let
        // the faulting instruction run again, or re-send a signal that was sent rather than raised by a fault.
        signal(sig, SIG_DFL);
        if (info->si_code <= 0) raise(sig);
    }

    void on_signal(int sig, siginfo_t* info, void* context)
    {
        bool ours = armed.load(std::memory_order_acquire) && pthread_equal(launch_thread.load(std::memory_order_relaxed), pthread_self());
        if (ours)
        {
            uintptr_t sp = interrupted_sp(context);
            // A thread that overflowed its stack may have moved its stack pointer far below it (a huge frame).
            ours = !fault.pending && (sp == 0 || (sp >= stacks_begin && sp < stacks_end) || in_stack_guard((uintptr_t)info->si_addr));
        }
        if (!ours)
        {
            chain(sig, info, context);
            return;
        }
        uintptr_t address = (uintptr_t)info->si_addr;
        bool overflow = in_stack_guard(address);
        bool shared = !overflow && address >= shared_map_begin && address < shared_map_end;
        const Range* r = shared || overflow ? nullptr : find(address);
        fault.pending = true;
        fault.address = address;
        fault.access = access_of(context);
        fault.shared = shared;
        fault.overflow = overflow;
        fault.registered = r != nullptr;
        if (r) fault.range = *r;
#if defined(__x86_64__)
        // Resume the fiber in on_fault, as if the faulting instruction had called it: below the interrupted
        // frame's red zone, rsp == 8 (mod 16), a null return address. The interrupted frame is abandoned, as
        // fail_current abandons every frame of a failing fiber; returning from the handler (sigreturn) restores
        // the signal mask, which a switch made from inside the handler would leave with SIGSEGV blocked.
        ucontext_t* uc = static_cast<ucontext_t*>(context);
        // After a stack overflow the interrupted frame's stack pointer is in (or beyond) the guard page: on_fault
        // runs from the top of the fiber's own slot instead, whose frames are as abandoned as the rest.
        uintptr_t from = overflow ? stacks_begin + ((address - stacks_begin) / stack_slot + 1) * stack_slot
                                  : (uintptr_t)uc->uc_mcontext.gregs[REG_RSP] - 256;
        uintptr_t sp = (from & ~(uintptr_t)15) - 8;
        *reinterpret_cast<uintptr_t*>(sp) = 0;
        uc->uc_mcontext.gregs[REG_RSP] = (greg_t)sp;
        uc->uc_mcontext.gregs[REG_RIP] = (greg_t)(uintptr_t)fault_target;
#else
        // ucontext fibers: on_fault's swapcontext to the scheduler restores the scheduler's signal mask itself.
        fault_target();
#endif
    }
}

void guard_install()
{
    if (installed) return;
    for (int i = 0; i < 2; i++)
    {
        int sig = i ? SIGBUS : SIGSEGV;
        struct sigaction old{};
        sigaction(sig, nullptr, &old);
        // Keep the previous handler's mask and flags (the .NET runtime's SA_ONSTACK: its handlers run on an
        // alternate stack, which stack-overflow handling needs); ours needs siginfo and must stay installed.
        struct sigaction mine{};
        mine.sa_sigaction = on_signal;
        mine.sa_mask = old.sa_mask;
        mine.sa_flags = (old.sa_flags | SA_SIGINFO | SA_ONSTACK) & ~SA_RESETHAND;
        sigaction(sig, &mine, &previous[i]);
    }
    installed = true;
}

void guard_begin_launch(const void* stacks, size_t bytes, size_t slot_bytes, size_t guard_bytes, void (*on_fault)())
{
    stack_slot = slot_bytes;
    stack_guard = guard_bytes;
    stacks_begin = (uintptr_t)stacks;
    stacks_end = (uintptr_t)stacks + bytes;
    fault_target = on_fault;
    fault.pending = false;
    launch_thread.store(pthread_self(), std::memory_order_relaxed);
    armed.store(true, std::memory_order_release);
}

void guard_set_dynamic_shared(const void* map, size_t map_bytes, const void* start, size_t launched_bytes)
{
    shared_map_begin = (uintptr_t)map;
    shared_map_end = (uintptr_t)map + map_bytes;
    shared_start = (uintptr_t)start;
    shared_bytes = launched_bytes;
}

void guard_end_launch() { armed.store(false, std::memory_order_release); }

std::string guard_fault_message()
{
    const Fault& f = fault;
    bool write = f.access == Access::Write, unknown = f.access == Access::Unknown;
    char text[300];
    if (f.overflow)
    {
        snprintf(text, sizeof text, "stack overflow in a GPU thread: its locals and calls need more than the emulator's %zu KiB "
                 "stack per thread (%s its guard page at 0x%llx; a huge local array or runaway recursion?)",
                 (stack_slot - stack_guard) / 1024, write ? "wrote to" : unknown ? "accessed" : "read", (unsigned long long)f.address);
        return text;
    }
    if (f.shared)
    {
        long long offset = (long long)(f.address - shared_start);
        size_t mapped = (shared_bytes + 15) & ~(size_t)15;
        snprintf(text, sizeof text, "%s dynamic shared memory out of bounds: byte %lld of %zu (launched with %zu bytes)",
                 write ? "wrote" : unknown ? "accessed" : "read", offset, mapped, shared_bytes);
        return text;
    }
    if (!f.registered)
    {
        snprintf(text, sizeof text, "%s address 0x%llx, which is in no allocation%s", write ? "wrote to" : unknown ? "accessed" : "read",
                 (unsigned long long)f.address, f.address < 65536 ? " (a null pointer?)" : "");
        return text;
    }
    const Range& r = f.range;
    long long offset = (long long)(f.address - r.start);
    char allocation[120];
    snprintf(allocation, sizeof allocation, "allocation #%lld of %lld bytes at 0x%llx", (long long)r.id, (long long)r.bytes,
             (unsigned long long)r.start);
    if (r.freed)
        snprintf(text, sizeof text, "%s freed memory: byte %lld of freed %s", write ? "wrote to" : unknown ? "accessed" : "read",
                 offset, allocation);
    else if (offset >= r.bytes)
        snprintf(text, sizeof text, "%s out of bounds: byte %lld (%lld past the end) of %s", write ? "wrote" : unknown ? "accessed" : "read",
                 offset, offset - r.bytes, allocation);
    else if (offset < 0)
        snprintf(text, sizeof text, "%s out of bounds: byte %lld (%lld before the start) of %s", write ? "wrote" : unknown ? "accessed" : "read",
                 offset, -offset, allocation);
    else
        snprintf(text, sizeof text, "faulted at byte %lld of %s, inside it (its pages were protected)", offset, allocation);
    return text;
}
}

using namespace phi2_emu;

// Registers the mapping [begin, begin + bytes) of allocation `id` (`length` bytes at `start`), live or freed.
// A mapping already registered at `begin` is replaced (an allocation being freed). Returns 0, or non-zero
// when the range is empty or overlaps another mapping's.
bool phi2_emu::guard_find_allocation(uintptr_t address, uintptr_t* start, int64_t* bytes)
{
    const Range* r = find(address);
    if (!r || r->freed || address < r->start || address >= r->start + (uintptr_t)r->bytes) return false;
    *start = r->start;
    *bytes = r->bytes;
    return true;
}

extern "C" __attribute__((visibility("default"))) int emu_register_range(
    uint64_t begin, uint64_t bytes, int64_t id, uint64_t start, int64_t length, int freed)
{
    std::lock_guard<std::mutex> guard(launch_mutex);
    guard_install();
    if (bytes == 0 || begin + bytes < begin) return 1;
    Range r{ (uintptr_t)begin, (uintptr_t)(begin + bytes), id, (uintptr_t)start, length, freed != 0 };
    size_t at = 0;
    while (at < ranges.size() && ranges[at].begin < r.begin) at++;
    bool replace = at < ranges.size() && ranges[at].begin == r.begin;
    if (at > 0 && ranges[at - 1].end > r.begin) return 2;
    size_t next = at + (replace ? 1 : 0);
    if (next < ranges.size() && ranges[next].begin < r.end) return 2;
    if (replace) ranges[at] = r;
    else ranges.insert(ranges.begin() + (ptrdiff_t)at, r);
    return 0;
}

// Forgets the mapping registered at `begin`. Returns 0, or 1 when none was.
extern "C" __attribute__((visibility("default"))) int emu_unregister_range(uint64_t begin)
{
    std::lock_guard<std::mutex> guard(launch_mutex);
    for (size_t i = 0; i < ranges.size(); i++)
    {
        if (ranges[i].begin != begin) continue;
        ranges.erase(ranges.begin() + (ptrdiff_t)i);
        return 0;
    }
    return 1;
}
