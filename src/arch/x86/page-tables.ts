import {
  BOOT_IDENTITY_MAP_BYTES, BOOT_PD_ADDR, BOOT_PDPT_ADDR, BOOT_PML4_ADDR, GiB, PAGE_SIZE, gpa, type Gpa,
} from './layout.js';

/** Page-table entry bits (Intel SDM vol. 3, 4.5): present, writable, and PS (a 2 MiB page in a PDE). */
const PTE_PRESENT = 1 << 0;
const PTE_WRITABLE = 1 << 1;
const PDE_PAGE_SIZE = 1 << 7;
const TWO_MIB = 2 * 1024 * 1024;
const ENTRIES = 512;

/**
 * Four-level page tables that identity-map the first BOOT_IDENTITY_MAP_BYTES with 2 MiB pages: what
 * the 64-bit boot protocol requires ("identity mapping for the kernel, zero page and command line"),
 * in the shape Firecracker builds (arch/x86_64/regs.rs setup_page_tables), but covering all of the low
 * 4 GiB so an initrd placed high below 4 GiB is mapped too. One PML4 entry -> one PDPT -> four PDs.
 * Returns the pages to write; CR3 = BOOT_PML4_ADDR.
 *
 * Every entry is written as two little-endian u32 halves: all addresses lie below 4 GiB, so the high
 * halves stay zero (and u32 arithmetic is cheaper than BigInt in code that runs once, unoptimised).
 */
export function identityPageTables(): { address: Gpa; bytes: Uint8Array }[] {
  const pdCount = BOOT_IDENTITY_MAP_BYTES / GiB;
  const pml4 = new Uint32Array(2 * ENTRIES);
  const pdpt = new Uint32Array(2 * ENTRIES);
  const pds = new Uint32Array(2 * ENTRIES * pdCount);
  pml4[0] = (BOOT_PDPT_ADDR | PTE_PRESENT | PTE_WRITABLE) >>> 0;
  for (let i = 0; i < pdCount; i++) pdpt[2 * i] = (BOOT_PD_ADDR + i * PAGE_SIZE + PTE_PRESENT + PTE_WRITABLE) >>> 0;
  for (let i = 0; i < ENTRIES * pdCount; i++) pds[2 * i] = i * TWO_MIB + PTE_PRESENT + PTE_WRITABLE + PDE_PAGE_SIZE;
  return [
    { address: BOOT_PML4_ADDR, bytes: new Uint8Array(pml4.buffer) },
    { address: BOOT_PDPT_ADDR, bytes: new Uint8Array(pdpt.buffer) },
    { address: gpa(BOOT_PD_ADDR), bytes: new Uint8Array(pds.buffer) },
  ];
}
