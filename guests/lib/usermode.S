/*
 * The assembly half of lib/usermode.c: the iretq into ring 3 and the
 * exception entry stubs, which return to the faulting code when
 * usermode_trap() has emulated the instruction.
 */
#include "usermode.h"

/* Vectors for which the CPU pushes an error code: #DF #TS #NP #SS #GP #PF
 * #AC #CP #VC #SX. The others get a dummy 0 so every frame looks alike. */
#define ERRCODE_VECTORS ((1 << 8) | (1 << 10) | (1 << 11) | (1 << 12) | \
                         (1 << 13) | (1 << 14) | (1 << 17) | (1 << 21) | \
                         (1 << 29) | (1 << 30))

        .text

/*
 * usermode_iret(rip, arg, rsp): noreturn. iretq is the one instruction that
 * loads CS, SS, RSP and RFLAGS (hence IOPL) at once for a privilege drop.
 * DS/ES hold the DPL0 selector 0x10, so iretq nulls them, which 64-bit mode
 * does not mind.
 */
        .global usermode_iret
usermode_iret:
        pushq $USER_DS                /* SS */
        pushq %rdx                    /* RSP */
        pushq $USER_RFLAGS            /* RFLAGS: IOPL=3, IF=0 */
        pushq $USER_CS                /* CS */
        pushq %rdi                    /* RIP */
        movq %rsi, %rdi               /* fn's argument */
        iretq

/* Where a user function that returns lands (usermode_enter puts this
 * address at the top of the user stack): #UD names the culprit. */
        .global usermode_returned
usermode_returned:
        ud2

/*
 * One stub per exception vector 0-31, and for the two interrupt vectors of
 * lib/tick.h (32, 33). The CPU has switched to TSS.RSP0 if
 * the fault came from ring 3, aligned RSP to 16 and pushed SS, RSP, RFLAGS,
 * CS, RIP and maybe an error code; we add the vector and every general
 * register. That is struct usermode_frame in usermode.c, which
 * usermode_trap() may change (an emulated instruction: its result, the next
 * RIP) before it returns; or it does not return at all.
 */
        .macro exc_stub vec
exc_\vec:
        .if \vec > 31 || !((ERRCODE_VECTORS >> \vec) & 1)
        pushq $0
        .endif
        pushq $\vec
        jmp exc_common
        .endm

        .irp vec, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33
        exc_stub \vec
        .endr

exc_common:
        pushq %rax
        pushq %rbx
        pushq %rcx
        pushq %rdx
        pushq %rsi
        pushq %rdi
        pushq %rbp
        pushq %r8
        pushq %r9
        pushq %r10
        pushq %r11
        pushq %r12
        pushq %r13
        pushq %r14
        pushq %r15
        cld
        movq %rsp, %rdi               /* struct usermode_frame * */
        movq %rsp, %rbx               /* callee-saved: the frame, after the call */
        andq $-16, %rsp               /* the SysV ABI wants it at the call */
        call usermode_trap
        movq %rbx, %rsp
        popq %r15
        popq %r14
        popq %r13
        popq %r12
        popq %r11
        popq %r10
        popq %r9
        popq %r8
        popq %rbp
        popq %rdi
        popq %rsi
        popq %rdx
        popq %rcx
        popq %rbx
        popq %rax
        addq $16, %rsp                /* vector and error code */
        iretq

        .section .rodata
        .align 8
        .global usermode_exc_stubs
usermode_exc_stubs:
        .irp vec, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33
        .quad exc_\vec
        .endr

        .section .note.GNU-stack, "", @progbits
