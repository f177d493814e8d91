import { BOOT_GDT_ADDR, BOOT_IDT_ADDR, BOOT_PML4_ADDR, BOOT_STACK_POINTER } from '../arch/x86/layout.js';
import { LINUX_BOOT_CS, LINUX_BOOT_DS, LINUX_BOOT_GDT, LINUX_BOOT_TSS, segmentFromGdt } from '../arch/x86/gdt.js';
import type { LinuxEntry } from '../boot/linux.js';
import type { Regs, Sregs } from '../kvm/structs.js';

/** Control register and EFER bits (Intel SDM vol. 3, 2.5 and 2.2.1). */
const CR0_PE = 1n << 0n;
const CR0_PG = 1n << 31n;
const CR4_PAE = 1n << 5n;
const EFER_LME = 1n << 8n;
const EFER_LMA = 1n << 10n;
const RFLAGS_RESERVED = 0x2n;

/**
 * The register state of boot.rst's 64-bit boot protocol, as Firecracker sets it (arch/x86_64/regs.rs):
 * long mode with paging on and the identity-mapping page tables in CR3, CS = __BOOT_CS (64-bit code),
 * DS/ES/SS = __BOOT_DS, interrupts off, RSI = boot_params, RIP = startup_64, a stack below the page
 * tables. Applied on top of the vCPU's reset state (`current`), which keeps KVM's APIC base and the rest.
 */
export function linuxEntryState(entry: LinuxEntry, current: Sregs): { regs: Regs; sregs: Sregs } {
  const code = segmentFromGdt(LINUX_BOOT_GDT[LINUX_BOOT_CS / 8]!, LINUX_BOOT_CS / 8);
  const data = segmentFromGdt(LINUX_BOOT_GDT[LINUX_BOOT_DS / 8]!, LINUX_BOOT_DS / 8);
  const tss = segmentFromGdt(LINUX_BOOT_GDT[LINUX_BOOT_TSS / 8]!, LINUX_BOOT_TSS / 8);
  const sregs: Sregs = {
    ...current,
    cs: code, ds: data, es: data, fs: data, gs: data, ss: data, tr: tss,
    gdt: { base: BigInt(BOOT_GDT_ADDR), limit: LINUX_BOOT_GDT.byteLength - 1 },
    idt: { base: BigInt(BOOT_IDT_ADDR), limit: 7 },
    cr0: (current.cr0 | CR0_PE | CR0_PG),
    cr3: BigInt(BOOT_PML4_ADDR),
    cr4: current.cr4 | CR4_PAE,
    efer: current.efer | EFER_LME | EFER_LMA,
  };
  const regs: Regs = {
    rax: 0n, rbx: 0n, rcx: 0n, rdx: 0n, rsi: BigInt(entry.bootParams), rdi: 0n,
    rsp: BigInt(BOOT_STACK_POINTER), rbp: BigInt(BOOT_STACK_POINTER),
    r8: 0n, r9: 0n, r10: 0n, r11: 0n, r12: 0n, r13: 0n, r14: 0n, r15: 0n,
    rip: BigInt(entry.entry), rflags: RFLAGS_RESERVED,
  };
  return { regs, sregs };
}
