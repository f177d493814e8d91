import { describe, expect, it } from 'vitest';
import { LINUX_BOOT_CS, LINUX_BOOT_DS, LINUX_BOOT_GDT, gdtEntry, segmentFromGdt } from '../../../src/arch/x86/gdt.js';
import { BOOT_PD_ADDR, BOOT_PDPT_ADDR, BOOT_PML4_ADDR, MPTABLE_ADDR } from '../../../src/arch/x86/layout.js';
import { IOAPIC_PINS, buildMptable, mptableSize } from '../../../src/arch/x86/mptable.js';
import { identityPageTables } from '../../../src/arch/x86/page-tables.js';

const sum = (b: Uint8Array) => b.reduce((s, x) => (s + x) & 0xff, 0);

describe('boot GDT', () => {
  it('encodes descriptors as Firecracker does and decodes them to KVM segments', () => {
    expect(gdtEntry(0xa09b, 0, 0xfffff)).toBe(0x00af_9b00_0000_ffffn);
    expect(gdtEntry(0xc093, 0, 0xfffff)).toBe(0x00cf_9300_0000_ffffn);
    const cs = segmentFromGdt(LINUX_BOOT_GDT[LINUX_BOOT_CS / 8]!, LINUX_BOOT_CS / 8);
    expect(cs).toMatchObject({ selector: 0x10, l: 1, db: 0, present: 1, s: 1, type: 0xb, limit: 0xffff_ffff, g: 1 });
    expect(segmentFromGdt(LINUX_BOOT_GDT[LINUX_BOOT_DS / 8]!, 3)).toMatchObject({ selector: 0x18, db: 1, type: 3 });
    expect(segmentFromGdt(0n, 1).unusable).toBe(1);
  });
});

describe('identity page tables', () => {
  it('map the low 4 GiB 1:1 with 2 MiB pages from CR3 = PML4', () => {
    const [pml4, pdpt, pd] = identityPageTables();
    expect(pml4!.address).toBe(BOOT_PML4_ADDR);
    const q = (b: Uint8Array, i: number) => new DataView(b.buffer, b.byteOffset).getBigUint64(i * 8, true);
    expect(q(pml4!.bytes, 0)).toBe(BigInt(BOOT_PDPT_ADDR) | 3n);
    expect(q(pdpt!.bytes, 3)).toBe(BigInt(BOOT_PD_ADDR + 3 * 4096) | 3n);
    expect(q(pdpt!.bytes, 4)).toBe(0n);
    expect(pd!.bytes.length).toBe(4 * 4096);
    expect(q(pd!.bytes, 8)).toBe(BigInt(16 * 1024 * 1024) | 0x83n);
    expect(q(pd!.bytes, 2047)).toBe(BigInt(4 * 1024 ** 3 - 2 * 1024 ** 2) | 0x83n);
  });
});

describe('MP table', () => {
  it('lists every CPU, the IOAPIC and its pins, with valid checksums', () => {
    const t = buildMptable(MPTABLE_ADDR, 3);
    const v = new DataView(t.buffer);
    expect(t.length).toBe(mptableSize(3));
    expect(new TextDecoder().decode(t.subarray(0, 4))).toBe('_MP_');
    expect(sum(t.subarray(0, 16))).toBe(0);
    expect(v.getUint32(4, true)).toBe(MPTABLE_ADDR + 16);
    expect(new TextDecoder().decode(t.subarray(16, 20))).toBe('PCMP');
    const length = v.getUint16(20, true);
    expect(sum(t.subarray(16, 16 + length))).toBe(0);
    expect(v.getUint16(16 + 34, true)).toBe(3 + 1 + 1 + IOAPIC_PINS + 2);
    // CPU entries: APIC IDs 0..2, the first the BSP.
    for (let i = 0; i < 3; i++) {
      expect(v.getUint8(60 + i * 20)).toBe(0);
      expect(v.getUint8(60 + i * 20 + 1)).toBe(i);
      expect(v.getUint8(60 + i * 20 + 3)).toBe(i === 0 ? 3 : 1);
    }
    // The IOAPIC entry, after the bus, takes the first free APIC ID.
    expect(v.getUint8(60 + 60 + 8)).toBe(2);
    expect(v.getUint8(60 + 60 + 8 + 1)).toBe(3);
    expect(v.getUint32(60 + 60 + 8 + 4, true)).toBe(0xfec00000);
    // The table fits in the BIOS area for the most vCPUs the board allows.
    expect(mptableSize(254)).toBeLessThan(0x10000);
  });
});
