import type { Segment } from '../../kvm/structs.js';

/**
 * The boot GDT for the 64-bit Linux entry, in Firecracker's shape (arch/x86_64/gdt.rs): descriptors
 * built from (flags, base, limit) and the KVM segments that describe the same descriptors. Selectors
 * follow boot.rst's 64-bit protocol: __BOOT_CS = 0x10 and __BOOT_DS = 0x18 (entry 1 stays null), and
 * a TSS at 0x20 that VM entry wants usable.
 */

/** Descriptor flags words (access byte in bits 0-7, flags nibble in 12-15), as Firecracker writes them. */
const CODE64_FLAGS = 0xa09b; // present, DPL 0, code exec/read accessed, L=1, G=1
const DATA_FLAGS = 0xc093; // present, DPL 0, data read/write accessed, D/B=1, G=1
const TSS_FLAGS = 0x808b; // present, busy 64-bit TSS, G=1

export const LINUX_BOOT_CS = 0x10;
export const LINUX_BOOT_DS = 0x18;
export const LINUX_BOOT_TSS = 0x20;

/** A GDT entry from flags, base and limit (Intel SDM vol. 3, 3.4.5). */
export function gdtEntry(flags: number, base: number, limit: number): bigint {
  const b = BigInt(base >>> 0);
  const l = BigInt(limit >>> 0);
  const f = BigInt(flags);
  return ((b & 0xff00_0000n) << 32n) | ((f & 0xf0ffn) << 40n) | ((l & 0xf_0000n) << 32n) | ((b & 0x00ff_ffffn) << 16n) | (l & 0xffffn);
}

/** The KVM segment register contents for descriptor `entry` at GDT index `index`. */
export function segmentFromGdt(entry: bigint, index: number): Segment {
  const bits = (shift: bigint, mask: bigint) => Number((entry >> shift) & mask);
  const base = ((entry >> 16n) & 0xff_ffffn) | (((entry >> 56n) & 0xffn) << 24n);
  const limit = Number((entry & 0xffffn) | (((entry >> 48n) & 0xfn) << 16n));
  const present = bits(47n, 1n);
  return {
    base,
    limit: bits(55n, 1n) ? limit * 4096 + 4095 : limit,
    selector: index * 8,
    type: bits(40n, 0xfn),
    present,
    dpl: bits(45n, 3n),
    db: bits(54n, 1n),
    s: bits(44n, 1n),
    l: bits(53n, 1n),
    g: bits(55n, 1n),
    avl: bits(52n, 1n),
    unusable: present === 0 ? 1 : 0,
  };
}

/** The table: null, null, __BOOT_CS (64-bit code), __BOOT_DS (flat data), TSS. */
export const LINUX_BOOT_GDT = new BigUint64Array([
  0n,
  0n,
  gdtEntry(CODE64_FLAGS, 0, 0xfffff),
  gdtEntry(DATA_FLAGS, 0, 0xfffff),
  gdtEntry(TSS_FLAGS, 0, 0xfffff),
]);
