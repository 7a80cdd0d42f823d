// fiber.cpp - the x86-64 context switch of fiber.h, in global asm (a file of its own so the symbols are
// defined once). Where fiber.h uses ucontext this file is empty.
#include "fiber.h"

#if defined(PHI2_EMU_FAST_SWITCH)

// phi2_emu_switch(rdi = where to save the current stack pointer, rsi = the stack pointer to resume).
// The frame it leaves on a suspended stack, from the saved rsp up (64 bytes; fiber.h's context_start
// builds the same frame for a fresh context):
//   +0 MXCSR (4 bytes), +4 x87 control word (2 bytes, 2 unused), +8 r15, +16 r14, +24 r13, +32 r12,
//   +40 rbx, +48 rbp, +56 the return address.
// ldmxcsr and fldcw are slow (about half of a switch on Zen 4), and fibers practically never change the
// modes, so each is loaded only when the resumed context's value differs (rax, rdx: caller-saved scratch).
// Every stack it switches between holds this same frame, so one set of CFI offsets describes it on either
// side of the `movq %rsi, %rsp`.
//
// phi2_emu_fiber_start is where a fresh context "returns" to: rsp is then 16-byte aligned, so its call
// of r12 (the entry) enters it at rsp == 8 (mod 16), as the ABI requires. Its return address is marked
// undefined in the unwind info, so debuggers and unwinders stop there instead of walking off the top of
// the fiber's stack. The entry never returns (ud2 if it did).
asm(R"(
    .text
    .p2align 4
    .globl phi2_emu_switch
    .hidden phi2_emu_switch
    .type phi2_emu_switch, @function
phi2_emu_switch:
    .cfi_startproc
    pushq %rbp
    .cfi_adjust_cfa_offset 8
    pushq %rbx
    .cfi_adjust_cfa_offset 8
    pushq %r12
    .cfi_adjust_cfa_offset 8
    pushq %r13
    .cfi_adjust_cfa_offset 8
    pushq %r14
    .cfi_adjust_cfa_offset 8
    pushq %r15
    .cfi_adjust_cfa_offset 8
    subq $8, %rsp
    .cfi_adjust_cfa_offset 8
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movl (%rsp), %eax
    movzwl 4(%rsp), %edx
    movq %rsi, %rsp
    cmpl (%rsp), %eax
    je 1f
    ldmxcsr (%rsp)
1:
    cmpw 4(%rsp), %dx
    je 2f
    fldcw 4(%rsp)
2:
    addq $8, %rsp
    .cfi_adjust_cfa_offset -8
    popq %r15
    .cfi_adjust_cfa_offset -8
    popq %r14
    .cfi_adjust_cfa_offset -8
    popq %r13
    .cfi_adjust_cfa_offset -8
    popq %r12
    .cfi_adjust_cfa_offset -8
    popq %rbx
    .cfi_adjust_cfa_offset -8
    popq %rbp
    .cfi_adjust_cfa_offset -8
    ret
    .cfi_endproc
    .size phi2_emu_switch, .-phi2_emu_switch

    .p2align 4
    .globl phi2_emu_fiber_start
    .hidden phi2_emu_fiber_start
    .type phi2_emu_fiber_start, @function
phi2_emu_fiber_start:
    .cfi_startproc
    .cfi_undefined rip
    callq *%r12
    ud2
    .cfi_endproc
    .size phi2_emu_fiber_start, .-phi2_emu_fiber_start
)");

#endif
