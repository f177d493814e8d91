import { describe, expect, it } from 'vitest';
import { cpuidForVcpu } from '../../../src/vcpu/cpuid.js';
import { multibootEntryState } from '../../../src/vcpu/boot-state.js';
import { decodeSregs, encodeSregs, decodeRegs, encodeRegs, KVM_SREGS_SIZE } from '../../../src/kvm/structs.js';
import { gpa } from '../../../src/arch/x86/layout.js';

const supported = [
  { function: 0, index: 0, flags: 0, eax: 0xd, ebx: 1, ecx: 2, edx: 3 },
  { function: 1, index: 0, flags: 0, eax: 0x806f8, ebx: 0xff00_0800, ecx: 0x1, edx: 0x1000_0000 },
  { function: 0xb, index: 0, flags: 1, eax: 0, ebx: 1, ecx: 0x100, edx: 0xff },
];

describe('cpuidForVcpu', () => {
  it('sets the APIC ID, logical count and hypervisor bit per vCPU, leaving other leaves alone', () => {
    const t = cpuidForVcpu(supported, 3, 4);
    expect(t[0]).toEqual(supported[0]);
    expect(t[1]!.ebx >>> 24).toBe(3);
    expect((t[1]!.ebx >>> 16) & 0xff).toBe(4);
    expect(t[1]!.ebx & 0xffff).toBe(0x0800);
    expect(t[1]!.ecx >>> 31).toBe(1);
    expect(t[1]!.edx & 0x1000_0000).not.toBe(0);
    expect(t[2]!.edx).toBe(3);
    expect(cpuidForVcpu(supported, 0, 1)[1]!.edx & 0x1000_0000).toBe(0);
    expect(supported[1]!.ebx).toBe(0xff00_0800); // input untouched
  });
});

describe('multibootEntryState', () => {
  it('is flat 32-bit protected mode with EAX=0x2BADB002, EBX=info, paging and interrupts off', () => {
    const reset = decodeSregs(new Uint8Array(KVM_SREGS_SIZE));
    const { regs, sregs } = multibootEntryState(
      { entry: gpa(0x100010), eax: 0x2badb002, ebx: gpa(0x9000), gdt: gpa(0x500), kernelStart: gpa(0x100000), kernelEnd: gpa(0x120000) },
      reset,
    );
    expect(regs.rax).toBe(0x2badb002n);
    expect(regs.rbx).toBe(0x9000n);
    expect(regs.rip).toBe(0x100010n);
    expect(regs.rflags & 0x200n).toBe(0n);
    expect(sregs.cr0 & 1n).toBe(1n);
    expect(sregs.cr0 & 0x8000_0000n).toBe(0n);
    expect(sregs.cs).toMatchObject({ base: 0n, limit: 0xffff_ffff, db: 1, l: 0, g: 1, present: 1, selector: 0x08 });
    expect(sregs.ss).toMatchObject({ base: 0n, limit: 0xffff_ffff, db: 1, type: 3 });
    // Round trip through the kernel's byte layout.
    expect(decodeSregs(encodeSregs(sregs))).toEqual(sregs);
    expect(decodeRegs(encodeRegs(regs))).toEqual(regs);
  });
});
