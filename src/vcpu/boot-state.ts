import type { Regs, Segment, Sregs } from '../kvm/structs.js';
import { BOOT_CODE_SELECTOR, BOOT_DATA_SELECTOR, BOOT_GDT, type MultibootEntry } from '../boot/multiboot.js';

/** CR0.PE: protected mode. CR0.ET: hard-wired to 1 on every CPU since the 486. */
const CR0_PE = 1n << 0n;
const CR0_ET = 1n << 4n;
/** RFLAGS bit 1 is reserved and always 1. */
const RFLAGS_RESERVED = 0x2n;

/** Segment types (Intel SDM vol. 3, 3.4.5.1): execute/read accessed, read/write accessed, busy 32-bit TSS. */
const TYPE_CODE_XRA = 0xb;
const TYPE_DATA_RWA = 0x3;
const TYPE_TSS_BUSY = 0xb;
const TYPE_LDT = 0x2;

function flat(selector: number, type: number): Segment {
  return { base: 0n, limit: 0xffff_ffff, selector, type, present: 1, dpl: 0, db: 1, s: 1, l: 0, g: 1, avl: 0, unusable: 0 };
}

/**
 * The register state the Multiboot Specification (3.2, "Machine state") requires at entry: flat 4 GiB
 * code and data segments, protected mode with paging off, interrupts off, EAX = the bootloader magic,
 * EBX = the information structure. Applied on top of the vCPU's reset state (`current`).
 */
export function multibootEntryState(entry: MultibootEntry, current: Sregs): { regs: Regs; sregs: Sregs } {
  const code = flat(BOOT_CODE_SELECTOR, TYPE_CODE_XRA);
  const data = flat(BOOT_DATA_SELECTOR, TYPE_DATA_RWA);
  const sregs: Sregs = {
    ...current,
    cs: code, ds: data, es: data, fs: data, gs: data, ss: data,
    // VM entry checks want a usable busy TSS and, if usable, a proper LDT; neither is used by the guest.
    tr: { base: 0n, limit: 0xffff, selector: 0, type: TYPE_TSS_BUSY, present: 1, dpl: 0, db: 0, s: 0, l: 0, g: 0, avl: 0, unusable: 0 },
    ldt: { base: 0n, limit: 0xffff, selector: 0, type: TYPE_LDT, present: 1, dpl: 0, db: 0, s: 0, l: 0, g: 0, avl: 0, unusable: 1 },
    gdt: { base: BigInt(entry.gdt), limit: BOOT_GDT.byteLength - 1 },
    idt: { base: 0n, limit: 0 },
    cr0: CR0_PE | CR0_ET,
    cr3: 0n,
    cr4: 0n,
    efer: 0n,
  };
  const regs: Regs = {
    rax: BigInt(entry.eax), rbx: BigInt(entry.ebx), rcx: 0n, rdx: 0n, rsi: 0n, rdi: 0n, rsp: 0n, rbp: 0n,
    r8: 0n, r9: 0n, r10: 0n, r11: 0n, r12: 0n, r13: 0n, r14: 0n, r15: 0n,
    rip: BigInt(entry.entry), rflags: RFLAGS_RESERVED,
  };
  return { regs, sregs };
}
