// launch.cpp - the emulator's runtime: emu_launch walks the grid block by block and runs the threads
// of each block as fibers (fiber.h), switching only at barriers, so a kernel's result never depends
// on the host's scheduling. Anything the GPU leaves undefined that can be detected here fails the
// launch with a message naming the kernel, the block and the thread; so does a kernel's access to a
// guard page or freed memory (guard.h).
#include "emu.h"
#include "fiber.h"
#include "guard.h"
#include "kernels.h"

#include <link.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include <mutex>
#include <string>
#include <vector>

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

namespace phi2_emu
{
namespace
{
    enum class State { Ready, AtBlockBarrier, AtWarpBarrier, Exited };

    struct Fiber
    {
        Context context;
        uint3 thread;              // its threadIdx, computed once per launch
        State state = State::Ready;
        unsigned warp_mask = 0;    // the mask of the warp barrier it waits at
        uint64_t slot = 0;         // its deposit for the current warp exchange
        // Its cp.async copies not yet completed by a wait, each with the group it belongs to (the count of groups
        // committed before it was issued), and how many groups it has committed.
        struct AsyncCopy { unsigned char* dst; unsigned char data[16]; unsigned group; };
        std::vector<AsyncCopy> async_copies;
        unsigned async_committed = 0;
    };

    // Each fiber needs its own stack. 256 KiB leaves room for the local arrays of a register-heavy
    // kernel; the stacks are reserved once and reused by every block of every launch (stack_cache).
    constexpr size_t StackBytes = 256 * 1024;
    // The largest dynamic shared memory a block may opt into on Hopper (sm_90).
    constexpr int MaxDynamicShared = 227 * 1024;

    struct Launch
    {
        const char* kernel;
        KernelThunk thunk;
        void** args;
        std::vector<Fiber> fibers;
        Context scheduler;
        unsigned current = 0;
        bool failed = false;
        std::string error;
        unsigned char* dynamic_shared = nullptr;
    };

    // Launches share the module's TLS refill, the fiber stacks and the fault handler's state, so they
    // are serialized by guard.h's launch_mutex; that costs nothing for tests and keeps the model simple.

    // The fiber stacks, kept from launch to launch (guarded by launch_mutex): mapping them and faulting
    // their first pages in again cost ~0.45 ms per launch of 256 threads (add_f32 over 1000 elements:
    // 0.53 ms a launch without the cache, 0.06 ms with it). Only grows, to at most 1024 threads x
    // slot_bytes() of address space (MAP_NORESERVE; only the pages kernels touched stay resident). Each
    // fiber's slot is a PROT_NONE guard page followed by its StackBytes stack, so a thread that overflows its
    // stack faults in its own guard page (guard.cpp reports it) instead of overwriting its neighbour's stack;
    // -fstack-clash-protection (the MSBuild target) makes a frame larger than a page probe every page it
    // allocates, so even a huge local array reaches the guard page before it could skip over it.
    struct StackCache { char* base = nullptr; size_t threads = 0; } stack_cache;

    size_t page_bytes() { static const size_t page = (size_t)sysconf(_SC_PAGESIZE); return page; }
    size_t slot_bytes() { return page_bytes() + StackBytes; }

    char* fiber_stacks(size_t threads)
    {
        if (threads <= stack_cache.threads) return stack_cache.base;
        size_t bytes = slot_bytes() * threads;
        void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) return nullptr;
        for (size_t i = 0; i < threads; i++)
            if (mprotect(static_cast<char*>(p) + slot_bytes() * i, page_bytes(), PROT_NONE) != 0)
            {
                munmap(p, bytes);
                return nullptr;
            }
        if (stack_cache.base) munmap(stack_cache.base, slot_bytes() * stack_cache.threads);
        stack_cache = StackCache{ static_cast<char*>(p), threads };
        return stack_cache.base;
    }

    // A fault in a fiber's guard page leaves the fiber's stack pointer there, where the kernel cannot push the
    // signal frame: the handler runs only on an alternate signal stack. The .NET runtime gives every thread it
    // runs managed code on one; a launching thread without one (a native thread) gets this one for the launch.
    alignas(16) char alternate_stack[64 * 1024];

    // The launch's dynamic shared memory, kept from launch to launch like the stacks (guarded by launch_mutex):
    // [PROT_NONE page][capacity bytes][PROT_NONE page], the buffer placed so it ends (its size rounded up to 16)
    // right at the trailing guard page. Only grows; a launch of no more than the capacity reuses it.
    struct SharedCache { char* base = nullptr; size_t capacity = 0; } shared_cache;

    // Where a launch of `bytes` (> 0) dynamic shared bytes gets its buffer, or null when it cannot be mapped.
    unsigned char* dynamic_shared_buffer(size_t bytes)
    {
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        size_t rounded = (bytes + 15) & ~(size_t)15;
        if (rounded > shared_cache.capacity)
        {
            size_t capacity = (rounded + page - 1) & ~(page - 1);
            void* p = mmap(nullptr, capacity + 2 * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (p == MAP_FAILED) return nullptr;
            if (mprotect(static_cast<char*>(p) + page, capacity, PROT_READ | PROT_WRITE) != 0)
            {
                munmap(p, capacity + 2 * page);
                return nullptr;
            }
            if (shared_cache.base) munmap(shared_cache.base, shared_cache.capacity + 2 * page);
            shared_cache = SharedCache{ static_cast<char*>(p), capacity };
        }
        unsigned char* start = reinterpret_cast<unsigned char*>(shared_cache.base + page + shared_cache.capacity - rounded);
        guard_set_dynamic_shared(shared_cache.base, shared_cache.capacity + 2 * page, start, bytes);
        return start;
    }

    // The only emulator state that must live in TLS (the fill below wipes all of it before each block).
    thread_local Launch* current_launch;

    [[noreturn]] void fail_current(const std::string& what)
    {
        Launch& l = *current_launch;
        if (!l.failed)
        {
            char where[160];
            snprintf(where, sizeof where, "kernel %s, block (%u,%u,%u), thread (%u,%u,%u): ", l.kernel,
                     blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z);
            l.failed = true;
            l.error = where + what;
        }
        // Leave the fiber for good: its stack is abandoned, which is fine since kernels hold only
        // trivially destructible locals.
        l.fibers[l.current].state = State::Exited;
        context_switch(l.fibers[l.current].context, l.scheduler);
        __builtin_unreachable();
    }

    // Where the fault handler resumes a fiber that touched a guard page, freed memory or no memory.
    [[noreturn]] void fail_on_fault() { fail_current(guard_fault_message()); }

    void yield_to_scheduler()
    {
        Launch& l = *current_launch;
        context_switch(l.fibers[l.current].context, l.scheduler);
    }

    // Fills this library's TLS block (all __shared__ variables and the emulator's own thread_locals)
    // with 0xFF: a NaN in every float format, so unsynchronized or uninitialized reads show up.
    struct TlsBlock { unsigned char* start; size_t bytes; };
    int find_tls(struct dl_phdr_info* info, size_t, void* data)
    {
        auto* out = static_cast<TlsBlock*>(data);
        uintptr_t self = reinterpret_cast<uintptr_t>(&find_tls);
        bool mine = false;
        size_t tls = 0;
        for (int i = 0; i < info->dlpi_phnum; i++)
        {
            const ElfW(Phdr)& ph = info->dlpi_phdr[i];
            uintptr_t begin = info->dlpi_addr + ph.p_vaddr;
            if (ph.p_type == PT_LOAD && self >= begin && self < begin + ph.p_memsz) mine = true;
            if (ph.p_type == PT_TLS) tls = ph.p_memsz;
        }
        if (!mine) return 0;
        out->start = static_cast<unsigned char*>(info->dlpi_tls_data);
        out->bytes = tls;
        return 1;
    }

    void poison_shared(Launch* launch, const TlsBlock& tls, size_t dynamic_bytes)
    {
        memset(tls.start, 0xFF, tls.bytes);
        current_launch = launch;
        if (dynamic_bytes) memset(launch->dynamic_shared, 0xFF, dynamic_bytes);
    }

    // A fiber's entry: never returns, it leaves by switching to the scheduler for good.
    void fiber_main()
    {
        Launch& l = *current_launch;
        l.thunk(l.args);
        l.fibers[l.current].state = State::Exited;
        context_switch(l.fibers[l.current].context, l.scheduler);
        __builtin_trap();
    }

    unsigned count(const Launch& l, State s)
    {
        unsigned n = 0;
        for (const Fiber& f : l.fibers) n += f.state == s;
        return n;
    }

    // Releases the warp barriers whose every named lane has arrived with the same mask; a mask naming
    // an exited or missing lane can never complete and fails. Returns whether any fiber was released.
    bool release_warps(Launch& l, std::string& problem)
    {
        bool released = false;
        unsigned n = (unsigned)l.fibers.size();
        for (unsigned base = 0; base < n; base += 32)
        {
            for (unsigned lane = 0; lane < 32 && base + lane < n; lane++)
            {
                Fiber& f = l.fibers[base + lane];
                if (f.state != State::AtWarpBarrier) continue;
                bool all = true;
                for (unsigned other = 0; other < 32; other++)
                {
                    if (!(f.warp_mask >> other & 1u)) continue;
                    if (base + other >= n || l.fibers[base + other].state == State::Exited)
                    {
                        char text[160];
                        snprintf(text, sizeof text, "a warp operation's mask 0x%08x names lane %u of warp %u, which %s",
                                 f.warp_mask, other, base / 32, base + other >= n ? "does not exist" : "has exited");
                        problem = text;
                        return false;
                    }
                    const Fiber& o = l.fibers[base + other];
                    if (o.state != State::AtWarpBarrier || o.warp_mask != f.warp_mask) all = false;
                }
                if (!all) continue;
                for (unsigned other = 0; other < 32; other++)
                    if (f.warp_mask >> other & 1u) l.fibers[base + other].state = State::Ready;
                released = true;
            }
        }
        return released;
    }

    void start_fibers(Launch& l, char* stacks)
    {
        for (size_t i = 0; i < l.fibers.size(); i++)
        {
            Fiber& f = l.fibers[i];
            f.state = State::Ready;
            f.async_copies.clear();
            f.async_committed = 0;
            // Stack colouring: the tops of stacks StackBytes apart all map to the same L1 and L2 cache sets,
            // so the fibers' frames evict each other; shifting each top by i * 64 bytes (mod 16 KiB) spreads
            // them over 256 sets (about 5% off add_f32 over 1M elements).
            size_t colour = (i * 64) % (16 * 1024);
            context_start(f.context, stacks + slot_bytes() * i + page_bytes(), StackBytes - colour, fiber_main);
        }
    }

    // Runs one block's fibers to completion; false (with l.error set) when the block failed.
    bool run_block(Launch& l)
    {
        unsigned n = (unsigned)l.fibers.size();
        for (;;)
        {
            for (unsigned i = 0; i < n; i++)
            {
                if (l.fibers[i].state != State::Ready) continue;
                l.current = i;
                threadIdx = l.fibers[i].thread;
                context_switch(l.scheduler, l.fibers[i].context);
                if (l.failed) return false;
            }
            unsigned exited = count(l, State::Exited);
            if (exited == n) return true;
            std::string problem;
            if (release_warps(l, problem)) continue;
            unsigned at_block = count(l, State::AtBlockBarrier);
            if (problem.empty() && at_block == n - exited && exited == 0)
            {
                for (Fiber& f : l.fibers) f.state = State::Ready;
                continue;
            }
            if (problem.empty())
            {
                char text[200];
                snprintf(text, sizeof text,
                         "barrier deadlock: %u thread(s) wait at __syncthreads, %u at a warp operation, %u exited "
                         "without reaching the barrier", at_block, count(l, State::AtWarpBarrier), exited);
                problem = text;
            }
            char where[120];
            snprintf(where, sizeof where, "kernel %s, block (%u,%u,%u): ", l.kernel, blockIdx.x, blockIdx.y, blockIdx.z);
            l.failed = true;
            l.error = where + problem;
            return false;
        }
    }

    void set_error(char* buffer, int length, const std::string& text)
    {
        if (!buffer || length <= 0) return;
        snprintf(buffer, (size_t)length, "%s", text.c_str());
    }
}

void sync_block()
{
    Launch& l = *current_launch;
    l.fibers[l.current].state = State::AtBlockBarrier;
    yield_to_scheduler();
}

void fail(const char* what) { fail_current(what); }

unsigned lane_id() { return current_launch->current % 32; }

void* dynamic_shared() { return current_launch->dynamic_shared; }

void async_copy_16(void* shared_dst, const void* global_src, int bytes, const char* op)
{
    if ((uintptr_t)shared_dst % 16 != 0 || (uintptr_t)global_src % 16 != 0)
    {
        char text[200];
        snprintf(text, sizeof text, "%s: the addresses %p (shared) and %p (global) must both be 16-byte aligned", op,
                 shared_dst, global_src);
        fail_current(text);
    }
    Fiber& f = current_launch->fibers[current_launch->current];
    Fiber::AsyncCopy copy{};
    copy.dst = static_cast<unsigned char*>(shared_dst);
    copy.group = f.async_committed;
    if (bytes == 16) memcpy(copy.data, global_src, 16); // a fault here fails the launch at the issuing thread
    memset(shared_dst, 0xFF, 16);                        // poisoned until the wait that completes it
    f.async_copies.push_back(copy);
}

void async_commit_group() { current_launch->fibers[current_launch->current].async_committed++; }

void async_wait_group(int pending)
{
    Fiber& f = current_launch->fibers[current_launch->current];
    unsigned keep = pending < 0 ? 0u : (unsigned)pending;
    unsigned complete_below = f.async_committed > keep ? f.async_committed - keep : 0u;
    size_t kept = 0;
    for (size_t i = 0; i < f.async_copies.size(); i++)
    {
        Fiber::AsyncCopy& copy = f.async_copies[i];
        if (copy.group < complete_below) memcpy(copy.dst, copy.data, 16);
        else f.async_copies[kept++] = copy;
    }
    f.async_copies.resize(kept);
}

// Two warp barriers: the first makes every deposit visible, the second keeps a fast lane from
// overwriting its slot with the next exchange's value before the slow ones have read this one.
static void warp_barrier(unsigned mask)
{
    Launch& l = *current_launch;
    l.fibers[l.current].state = State::AtWarpBarrier;
    l.fibers[l.current].warp_mask = mask;
    yield_to_scheduler();
}

static void check_mask(unsigned mask, const char* op)
{
    if (!(mask >> lane_id() & 1u))
        fail_current(std::string(op) + ": the calling lane is not in its own mask");
}

uint64_t warp_exchange(unsigned mask, uint64_t value, int src_lane, const char* op)
{
    check_mask(mask, op);
    Launch& l = *current_launch;
    unsigned base = l.current & ~31u;
    l.fibers[l.current].slot = value;
    warp_barrier(mask);
    if (src_lane < 0 || src_lane > 31 || !(mask >> src_lane & 1u))
        fail_current(std::string(op) + ": source lane " + std::to_string(src_lane) + " is not in the mask");
    uint64_t result = l.fibers[base + (unsigned)src_lane].slot;
    warp_barrier(mask);
    return result;
}

unsigned warp_ballot(unsigned mask, bool predicate, const char* op)
{
    check_mask(mask, op);
    Launch& l = *current_launch;
    unsigned base = l.current & ~31u;
    l.fibers[l.current].slot = predicate;
    warp_barrier(mask);
    unsigned ballot = 0;
    for (unsigned lane = 0; lane < 32; lane++)
        if ((mask >> lane & 1u) && l.fibers[base + lane].slot) ballot |= 1u << lane;
    warp_barrier(mask);
    return ballot;
}

// The deposits are pointers into each lane's own stack (`Deposit` below), valid while the lane waits:
// after the first barrier every lane copies all of them, and the second keeps any lane from returning
// (and reusing that stack) before the slowest has copied. Lanes that reached a different gather (a
// warp that diverged between two matrix operations) fail instead of exchanging mismatched data.
void warp_gather(unsigned mask, const void* mine, size_t bytes, void* all32, const char* op)
{
    check_mask(mask, op);
    Launch& l = *current_launch;
    unsigned n = (unsigned)l.fibers.size();
    unsigned base = l.current & ~31u;
    for (unsigned lane = 0; lane < 32; lane++)
    {
        if (!(mask >> lane & 1u) || base + lane < n) continue;
        char text[240];
        snprintf(text, sizeof text,
                 "%s needs lanes 0x%08x of warp %u, but lane %u does not exist (the block has %u threads; "
                 "warp-collective matrix operations need whole warps)", op, mask, base / 32, lane, n);
        fail_current(text);
    }
    struct Deposit { const void* data; size_t bytes; const char* op; };
    Deposit deposit{ mine, bytes, op };
    l.fibers[l.current].slot = (uint64_t)(uintptr_t)&deposit;
    warp_barrier(mask);
    unsigned char* out = static_cast<unsigned char*>(all32);
    for (unsigned lane = 0; lane < 32; lane++)
    {
        if (!(mask >> lane & 1u))
        {
            memset(out + lane * bytes, 0xFF, bytes);
            continue;
        }
        const Deposit* other = reinterpret_cast<const Deposit*>((uintptr_t)l.fibers[base + lane].slot);
        if (other->bytes != bytes || strcmp(other->op, op) != 0)
            fail_current(std::string(op) + ": lane " + std::to_string(lane) + " of the warp reached " + other->op +
                         " instead (the lanes of a warp must execute the same matrix operation together)");
        memcpy(out + lane * bytes, other->data, bytes);
    }
    warp_barrier(mask);
}
}

using namespace phi2_emu;

// Launches kernel `name` as cuLaunchKernel would: args[i] points at the i-th parameter's value.
// Returns 0 on success; otherwise non-zero with a message naming the kernel in errorBuffer.
extern "C" __attribute__((visibility("default"))) int emu_launch(
    const char* name, unsigned grid_x, unsigned grid_y, unsigned grid_z, unsigned block_x, unsigned block_y,
    unsigned block_z, int dynamic_shared_bytes, void** args, char* error_buffer, int error_length)
{
    std::lock_guard<std::mutex> guard(launch_mutex);
    guard_install();
    const KernelEntry* entry = find_kernel(name);
    if (!entry)
    {
        set_error(error_buffer, error_length, std::string("no kernel named ") + (name ? name : "(null)") + " in libphi2emu");
        return 1;
    }
    uint64_t threads = (uint64_t)block_x * block_y * block_z;
    if (grid_x == 0 || grid_y == 0 || grid_z == 0 || grid_y > 65535 || grid_z > 65535 || threads == 0 ||
        threads > 1024 || block_z > 64 || dynamic_shared_bytes < 0 || dynamic_shared_bytes > MaxDynamicShared)
    {
        char text[200];
        snprintf(text, sizeof text, "kernel %s: invalid launch configuration grid (%u,%u,%u) block (%u,%u,%u) dynamic shared %d",
                 name, grid_x, grid_y, grid_z, block_x, block_y, block_z, dynamic_shared_bytes);
        set_error(error_buffer, error_length, text);
        return 1;
    }

    Launch launch;
    launch.kernel = entry->name;
    launch.thunk = entry->thunk;
    launch.args = args;
    launch.fibers.resize(threads);
    for (unsigned i = 0; i < (unsigned)threads; i++)
        launch.fibers[i].thread = uint3{ i % block_x, i / block_x % block_y, i / (block_x * block_y) };
    launch.dynamic_shared = nullptr;
    guard_set_dynamic_shared(nullptr, 0, nullptr, 0);
    if (dynamic_shared_bytes)
    {
        launch.dynamic_shared = dynamic_shared_buffer((size_t)dynamic_shared_bytes);
        if (!launch.dynamic_shared)
        {
            set_error(error_buffer, error_length, "libphi2emu: cannot map dynamic shared memory");
            return 1;
        }
    }

    current_launch = &launch; // touching a thread_local makes glibc allocate this thread's TLS block
    TlsBlock tls{};
    dl_iterate_phdr(find_tls, &tls);
    if (!tls.start)
    {
        set_error(error_buffer, error_length, "libphi2emu: cannot find its own TLS block");
        return 1;
    }
    size_t stack_bytes = slot_bytes() * threads;
    char* stacks = fiber_stacks(threads);
    if (!stacks)
    {
        set_error(error_buffer, error_length, "libphi2emu: cannot reserve fiber stacks");
        return 1;
    }

    stack_t own{}, previous_alternate{};
    bool borrowed = sigaltstack(nullptr, &previous_alternate) == 0 && (previous_alternate.ss_flags & SS_DISABLE);
    if (borrowed)
    {
        own.ss_sp = alternate_stack;
        own.ss_size = sizeof alternate_stack;
        borrowed = sigaltstack(&own, nullptr) == 0;
    }

    bool ok = true;
    guard_begin_launch(stacks, stack_bytes, slot_bytes(), page_bytes(), fail_on_fault);
    for (unsigned z = 0; ok && z < grid_z; z++)
        for (unsigned y = 0; ok && y < grid_y; y++)
            for (unsigned x = 0; ok && x < grid_x; x++)
            {
                poison_shared(&launch, tls, (size_t)dynamic_shared_bytes);
                blockIdx = uint3{ x, y, z };
                blockDim = dim3(block_x, block_y, block_z);
                gridDim = dim3(grid_x, grid_y, grid_z);
                start_fibers(launch, stacks);
                ok = run_block(launch);
            }
    guard_end_launch();
    if (borrowed)
    {
        stack_t off{};
        off.ss_flags = SS_DISABLE;
        sigaltstack(&off, nullptr);
    }
    current_launch = nullptr;
    if (!ok)
    {
        set_error(error_buffer, error_length, launch.error);
        return 1;
    }
    return 0;
}
