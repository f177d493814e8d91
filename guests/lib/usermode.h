/*
 * Running guest code in ring 3 (CPL3).
 *
 * Why: some KVM hosts emulate every guest CPL0 instruction (~2 MIPS) but run
 * CPL3 natively, so a guest that wants to go fast must do its work in user
 * mode. With IOPL=3 the user code keeps direct port I/O (serial, exit ports)
 * and cli, and with U/S set on the whole identity map it sees all memory, so
 * it needs no system calls: entering ring 3 is one-way.
 */
#ifndef GUEST_USERMODE_H
#define GUEST_USERMODE_H

/* Selectors (RPL included) of the GDT usermode_init() loads. The layout
 * 0x10 kernel data, 0x18 user data, 0x20 user code is the one SYSRET needs,
 * should anyone want syscalls later. 0x08/0x10 match lib/entry.S. */
#define KERNEL_CS   0x08
#define KERNEL_DS   0x10
#define USER_DS     0x1b
#define USER_CS     0x23
#define TSS_SEL     0x28

/* RFLAGS in ring 3: IOPL=3 (bits 12-13) for in/out/cli/sti, reserved bit 1,
 * IF=0 (until a guest that started lib/tick.h's timer runs sti to halt). */
#define USER_RFLAGS 0x3002

/* guest_exit() code after an exception (QEMU status 0xff). */
#define USERMODE_FAULT_EXIT 0x7f

#ifndef __ASSEMBLER__       /* usermode.S shares the constants above */
#include <stdint.h>

/*
 * Loads a GDT with user segments and a TSS (RSP0 = a kernel stack in .bss),
 * an IDT whose 32 exception handlers print what happened and
 * guest_exit(USERMODE_FAULT_EXIT) instead of triple-faulting (vectors 32 and
 * 33 are lib/tick.h's timer and spurious interrupts), and sets the
 * U/S bit on every present entry of the current page tables. Ring 0 only.
 */
void usermode_init(void);

/* Switches to ring 3 with iretq and calls fn(arg) there on a user stack in
 * .bss. fn must not return (if it does: #UD, reported as exception 6). */
__attribute__((noreturn)) void usermode_enter(void (*fn)(void *), void *arg);
#endif

#endif
