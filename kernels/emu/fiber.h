// fiber.h - the emulator's context switch: one Context per fiber (a thread of a block) and one for the
// scheduler. Part of the runtime, not of the kernel subset, so it may hold two-way code.
//
// x86-64 (SysV): a hand-written switch that saves only what the ABI says a callee must preserve - rbx,
// rbp, r12-r15, rsp, and the MXCSR and x87 control words - on the stack it leaves, and restores them from
// the stack it enters: ~15 ns. glibc's getcontext, swapcontext and setcontext also save or restore the
// signal mask, a sigprocmask system call each, three per emulated thread: most of the 0.62 us a thread
// cost with them. Elsewhere - or with PHI2_EMU_UCONTEXT defined, to test that path - ucontext.
//
//   context_start(c, stack, bytes, entry)  prepares c so the first switch to it calls entry() on the stack
//   context_switch(from, to)               saves the running context in from and resumes to
//
// entry() must never return: a fiber ends by switching away for good.
#pragma once

#include <stddef.h>
#include <stdint.h>

#if defined(__x86_64__) && !defined(PHI2_EMU_UCONTEXT)
#define PHI2_EMU_FAST_SWITCH 1

// Defined in fiber.cpp (global asm): the switch, and where a fresh context first "returns" to.
extern "C" void phi2_emu_switch(void** save_sp, void* load_sp);
extern "C" void phi2_emu_fiber_start();

namespace phi2_emu
{
    struct Context
    {
        void* sp = nullptr;
    };

    inline void context_start(Context& c, char* stack, size_t bytes, void (*entry)())
    {
        // Top of the stack, 16-byte aligned; the fake return address sits at top - 8, so after the switch's
        // `ret` pops it rsp == top, 16-byte aligned, and phi2_emu_fiber_start's call leaves entry() at
        // rsp == 8 (mod 16), exactly as after any call.
        uintptr_t top = ((uintptr_t)(stack + bytes)) & ~(uintptr_t)15;
        uint64_t* frame = reinterpret_cast<uint64_t*>(top - 64);
        uint32_t mxcsr;
        uint16_t fpucw;
        asm volatile("stmxcsr %0" : "=m"(mxcsr));
        asm volatile("fnstcw %0" : "=m"(fpucw));
        // A fiber starts with the scheduler's floating-point modes (rounding, flush-to-zero), as makecontext's do.
        frame[0] = (uint64_t)mxcsr | (uint64_t)fpucw << 32;
        frame[1] = frame[2] = frame[3] = 0;                     // r15, r14, r13
        frame[4] = (uint64_t)(uintptr_t)entry;                  // r12: what phi2_emu_fiber_start calls
        frame[5] = frame[6] = 0;                                // rbx, rbp (0 ends frame-pointer walks)
        frame[7] = (uint64_t)(uintptr_t)&phi2_emu_fiber_start;  // the return address
        c.sp = frame;
    }

    inline void context_switch(Context& from, Context& to) { phi2_emu_switch(&from.sp, to.sp); }
}

#else // not x86-64: glibc's ucontext, one sigprocmask system call per switch.

#include <ucontext.h>

namespace phi2_emu
{
    struct Context
    {
        ucontext_t uc;
    };

    // getcontext returns twice in the compiler's eyes, so it is kept out of the callers' frames.
    __attribute__((noinline)) inline void context_start(Context& c, char* stack, size_t bytes, void (*entry)())
    {
        getcontext(&c.uc);
        c.uc.uc_stack.ss_sp = stack;
        c.uc.uc_stack.ss_size = bytes;
        c.uc.uc_link = nullptr;
        makecontext(&c.uc, entry, 0);
    }

    inline void context_switch(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
}

#endif
