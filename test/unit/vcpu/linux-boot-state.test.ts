import { describe, expect, it } from 'vitest';
import { BOOT_PML4_ADDR, BOOT_STACK_POINTER, ZERO_PAGE_ADDR, gpa } from '../../../src/arch/x86/layout.js';
import { KVM_LAPIC_SIZE, KVM_SREGS_SIZE, decodeSregs, encodeSregs } from '../../../src/kvm/structs.js';
import { APIC_LVT_LINT0, APIC_LVT_LINT1, Msr, bootFpu, bootMsrs, withBootLints } from '../../../src/vcpu/cold-boot.js';
import { cpuidForVcpu } from '../../../src/vcpu/cpuid.js';
import { linuxEntryState } from '../../../src/vcpu/linux-boot-state.js';

describe('linuxEntryState (boot.rst, 64-bit boot protocol)', () => {
  it('enters startup_64 in long mode with paging, __BOOT_CS/__BOOT_DS and RSI = boot_params', () => {
    const reset = decodeSregs(new Uint8Array(KVM_SREGS_SIZE));
    const { regs, sregs } = linuxEntryState({ entry: gpa(0x1000200), bootParams: ZERO_PAGE_ADDR, format: 'bzImage', e820: [] }, reset);
    expect(regs.rip).toBe(0x1000200n);
    expect(regs.rsi).toBe(BigInt(ZERO_PAGE_ADDR));
    expect(regs.rsp).toBe(BigInt(BOOT_STACK_POINTER));
    expect(regs.rflags & 0x200n).toBe(0n); // interrupts off
    expect(sregs.cr0 & 0x8000_0001n).toBe(0x8000_0001n); // PG | PE
    expect(sregs.cr4 & 0x20n).toBe(0x20n); // PAE
    expect(sregs.efer & 0x500n).toBe(0x500n); // LME | LMA
    expect(sregs.cr3).toBe(BigInt(BOOT_PML4_ADDR));
    expect(sregs.cs).toMatchObject({ selector: 0x10, l: 1, present: 1 });
    for (const s of [sregs.ds, sregs.es, sregs.ss]) expect(s).toMatchObject({ selector: 0x18, db: 1, present: 1 });
    expect(sregs.tr).toMatchObject({ selector: 0x20, type: 0xb, present: 1 });
    expect(decodeSregs(encodeSregs(sregs))).toEqual(sregs);
  });
});

describe('cold-boot vCPU state (Firecracker)', () => {
  it('has the reset x87 control word and MXCSR', () => {
    const v = new DataView(bootFpu().buffer);
    expect(v.getUint16(128, true)).toBe(0x37f);
    expect(v.getUint32(408, true)).toBe(0x1f80);
  });

  it('sets the boot MSRs, MTRRs on with write-back default', () => {
    const { buffer, count } = bootMsrs();
    const v = new DataView(buffer.buffer);
    expect(v.getUint32(0, true)).toBe(count);
    const msrs = new Map<number, bigint>();
    for (let i = 0; i < count; i++) msrs.set(v.getUint32(8 + i * 16, true), v.getBigUint64(16 + i * 16, true));
    expect(msrs.get(Msr.MTRR_DEF_TYPE)).toBe(0x806n);
    expect(msrs.get(Msr.IA32_MISC_ENABLE)).toBe(1n);
    expect(msrs.get(Msr.LSTAR)).toBe(0n);
  });

  it('puts LINT0 in ExtINT and LINT1 in NMI delivery mode, keeping the other bits', () => {
    const lapic = new Uint8Array(KVM_LAPIC_SIZE);
    const v = new DataView(lapic.buffer);
    v.setUint32(APIC_LVT_LINT0, 0x10000, true); // masked, fixed
    v.setUint32(APIC_LVT_LINT1, 0x10000, true);
    const out = new DataView(withBootLints(lapic).buffer);
    expect(out.getUint32(APIC_LVT_LINT0, true)).toBe(0x10700);
    expect(out.getUint32(APIC_LVT_LINT1, true)).toBe(0x10400);
    expect(v.getUint32(APIC_LVT_LINT0, true)).toBe(0x10000); // input untouched
  });
});

describe('cpuid topology leaf 0xB', () => {
  it('reports one thread per core and `count` cores, with this vCPU as x2APIC ID', () => {
    const leaf = (index: number) => ({ function: 0xb, index, flags: 1, eax: 9, ebx: 9, ecx: 9, edx: 9 });
    const t = cpuidForVcpu([leaf(0), leaf(1), leaf(2)], 2, 3);
    expect(t[0]).toMatchObject({ eax: 0, ebx: 1, ecx: 0x100, edx: 2 });
    expect(t[1]).toMatchObject({ eax: 2, ebx: 3, ecx: 0x201, edx: 2 });
    expect(t[2]).toMatchObject({ eax: 0, ebx: 0, ecx: 2 });
  });
});
