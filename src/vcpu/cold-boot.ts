import { KVM_FPU_SIZE, KVM_LAPIC_SIZE } from '../kvm/structs.js';

/**
 * What a vCPU holds at a cold boot besides its registers, as Firecracker sets it for every vCPU
 * (arch/x86_64/{regs.rs setup_fpu, msr.rs create_boot_msr_entries, interrupts.rs set_lint}). Pure
 * encoders of the KVM structs, so each value is checked without /dev/kvm.
 */

/** struct kvm_fpu (arch/x86/include/uapi/asm/kvm.h): fpr[8][16], then fcw at 128; mxcsr at 408 after xmm[16][16]. */
const FPU_FCW = 128;
const FPU_MXCSR = 408;
/** x87 control word and MXCSR after FNINIT / reset: all exceptions masked, round to nearest. */
const FCW_DEFAULT = 0x37f;
const MXCSR_DEFAULT = 0x1f80;

export function bootFpu(): Uint8Array {
  const buf = new Uint8Array(KVM_FPU_SIZE);
  const v = new DataView(buf.buffer);
  v.setUint16(FPU_FCW, FCW_DEFAULT, true);
  v.setUint32(FPU_MXCSR, MXCSR_DEFAULT, true);
  return buf;
}

/** MSR numbers (Intel SDM vol. 4). */
export const Msr = {
  IA32_TSC: 0x10,
  IA32_SYSENTER_CS: 0x174,
  IA32_SYSENTER_ESP: 0x175,
  IA32_SYSENTER_EIP: 0x176,
  IA32_MISC_ENABLE: 0x1a0,
  MTRR_DEF_TYPE: 0x2ff,
  STAR: 0xc000_0081,
  LSTAR: 0xc000_0082,
  CSTAR: 0xc000_0083,
  SYSCALL_MASK: 0xc000_0084,
  KERNEL_GS_BASE: 0xc000_0102,
} as const;
/** IA32_MISC_ENABLE bit 0: fast string operations, on at reset on real CPUs. */
const MISC_ENABLE_FAST_STRING = 1n;
/** MTRRdefType: MTRRs enabled (bit 11), default type write-back (6), so RAM is cacheable to the guest. */
const MTRR_ENABLE_WRITEBACK = (1n << 11n) | 6n;

/** The boot MSRs, in Firecracker's order, as a struct kvm_msrs for KVM_SET_MSRS. */
export function bootMsrs(): { buffer: Uint8Array; count: number } {
  const entries: [number, bigint][] = [
    [Msr.IA32_SYSENTER_CS, 0n], [Msr.IA32_SYSENTER_ESP, 0n], [Msr.IA32_SYSENTER_EIP, 0n],
    [Msr.STAR, 0n], [Msr.CSTAR, 0n], [Msr.KERNEL_GS_BASE, 0n], [Msr.SYSCALL_MASK, 0n], [Msr.LSTAR, 0n],
    [Msr.IA32_TSC, 0n], [Msr.IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING], [Msr.MTRR_DEF_TYPE, MTRR_ENABLE_WRITEBACK],
  ];
  const buffer = new Uint8Array(8 + entries.length * 16);
  const v = new DataView(buffer.buffer);
  v.setUint32(0, entries.length, true);
  entries.forEach(([index, value], i) => {
    v.setUint32(8 + i * 16, index, true);
    v.setBigUint64(8 + i * 16 + 8, value, true);
  });
  return { buffer, count: entries.length };
}

/** Local APIC register offsets (Intel SDM vol. 3, 11.5.1): LVT LINT0 and LINT1. */
export const APIC_LVT_LINT0 = 0x350;
export const APIC_LVT_LINT1 = 0x360;
/** LVT delivery mode field, bits 10-8. */
const DELIVERY_MODE_MASK = 0x700;
const DELIVERY_MODE_EXTINT = 0x700;
const DELIVERY_MODE_NMI = 0x400;

/**
 * The vCPU's kvm_lapic_state with LINT0 delivering the PIC's interrupts (ExtINT) and LINT1 delivering
 * NMI, as a PC BIOS leaves them and as the MP table says (virtual wire mode); other bits kept.
 */
export function withBootLints(lapic: Uint8Array): Uint8Array {
  if (lapic.length < KVM_LAPIC_SIZE) throw new RangeError('kvm_lapic_state is 1024 bytes');
  const out = lapic.slice();
  const v = new DataView(out.buffer);
  const set = (reg: number, mode: number) => v.setUint32(reg, (v.getUint32(reg, true) & ~DELIVERY_MODE_MASK) | mode, true);
  set(APIC_LVT_LINT0, DELIVERY_MODE_EXTINT);
  set(APIC_LVT_LINT1, DELIVERY_MODE_NMI);
  return out;
}
