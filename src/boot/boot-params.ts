import { PAGE_SIZE, type Gpa } from '../arch/x86/layout.js';
import { BootError } from './boot-error.js';
import type { MemoryMapEntry } from './memory-map.js';
import {
  BOOT_FLAG_MAGIC, HDRS_MAGIC, Hdr, LOADFLAGS_CAN_USE_HEAP, LOADFLAGS_LOADED_HIGH, SETUP_HEADER_START,
  TYPE_OF_LOADER_UNDEFINED,
} from './setup-header.js';

/**
 * struct boot_params, "the zero page" (Documentation/arch/x86/zero-page.rst): one page the loader
 * fills and hands to the kernel in RSI at the 64-bit entry. Only the fields a VMM without firmware
 * sets are named here; everything else stays zero, which the kernel reads as "not provided".
 */
export const ZeroPage = {
  /** 0x0C0/4 ext_ramdisk_image: bits 63-32 of the initrd address. */
  EXT_RAMDISK_IMAGE: 0x0c0,
  /** 0x0C4/4 ext_ramdisk_size: bits 63-32 of the initrd size. */
  EXT_RAMDISK_SIZE: 0x0c4,
  /** 0x0C8/4 ext_cmd_line_ptr: bits 63-32 of the command line address. */
  EXT_CMD_LINE_PTR: 0x0c8,
  /** 0x1E8/1 e820_entries: how many entries of e820_table are valid. */
  E820_ENTRIES: 0x1e8,
  /** 0x2D0 e820_table[E820_MAX_ENTRIES_ZEROPAGE]: 20-byte entries {u64 addr, u64 size, u32 type}. */
  E820_TABLE: 0x2d0,
} as const;

/** E820_MAX_ENTRIES_ZEROPAGE (arch/x86/include/uapi/asm/bootparam.h): room in the zero page. */
export const E820_MAX_ENTRIES = 128;
const E820_ENTRY_SIZE = 20;
/** e820 types (arch/x86/include/asm/e820/types.h). */
export const E820_RAM = 1;
export const E820_RESERVED = 2;
/** vid_mode 0xFFFF: "normal" text mode (boot.rst, "Special command line options"). */
const VID_MODE_NORMAL = 0xffff;
/** heap_end_ptr: the end of the setup heap less 0x200; unused on the 64-bit path but obligatory. */
const HEAP_END_PTR = 0xfe00;
/** kernel_alignment written for an ELF vmlinux, which carries no header: 2 MiB, the x86-64 minimum. */
const VMLINUX_KERNEL_ALIGNMENT = 0x20_0000;

export interface E820Entry {
  readonly addr: number;
  readonly size: number;
  readonly type: number;
}

/** The e820 table for a memory map (the one multiboot reports too, so both boot paths agree). */
export function e820Entries(map: readonly MemoryMapEntry[]): E820Entry[] {
  if (map.length > E820_MAX_ENTRIES) throw new BootError(`memory map has ${map.length} entries; the zero page holds ${E820_MAX_ENTRIES}`);
  return map.map((e) => ({ addr: e.start, size: e.sizeBytes, type: e.type === 'ram' ? E820_RAM : E820_RESERVED }));
}

export interface BootParamsInput {
  /** The bzImage's setup header bytes (from 0x1F1); undefined for an ELF vmlinux, which has none. */
  readonly setupHeader?: Uint8Array;
  /** Where the kernel was placed (code32_start). */
  readonly kernelAddr: Gpa;
  readonly cmdlineAddr: Gpa;
  readonly initrd?: { readonly addr: Gpa; readonly sizeBytes: number };
  readonly e820: readonly E820Entry[];
}

/**
 * Builds the zero page: the kernel's own setup header when it has one (boot.rst: "the setup header
 * must be loaded from the kernel image"), then the fields a loader must write (type_of_loader,
 * loadflags, cmd_line_ptr, ramdisk_image/size, vid_mode, heap_end_ptr, code32_start) and the e820 map.
 */
export function buildBootParams(input: BootParamsInput): Uint8Array {
  const page = new Uint8Array(PAGE_SIZE);
  const v = new DataView(page.buffer);
  if (input.setupHeader !== undefined) {
    page.set(input.setupHeader, SETUP_HEADER_START);
  } else {
    // An ELF vmlinux has no header: write the parts the kernel checks, as Firecracker does.
    v.setUint16(Hdr.BOOT_FLAG, BOOT_FLAG_MAGIC, true);
    v.setUint32(Hdr.HEADER, HDRS_MAGIC, true);
    v.setUint32(Hdr.KERNEL_ALIGNMENT, VMLINUX_KERNEL_ALIGNMENT, true);
  }
  v.setUint16(Hdr.VID_MODE, VID_MODE_NORMAL, true);
  v.setUint8(Hdr.TYPE_OF_LOADER, TYPE_OF_LOADER_UNDEFINED);
  v.setUint8(Hdr.LOADFLAGS, v.getUint8(Hdr.LOADFLAGS) | LOADFLAGS_LOADED_HIGH | LOADFLAGS_CAN_USE_HEAP);
  v.setUint16(Hdr.HEAP_END_PTR, HEAP_END_PTR, true);
  v.setUint32(Hdr.CODE32_START, input.kernelAddr, true);
  setSplit(v, Hdr.CMD_LINE_PTR, ZeroPage.EXT_CMD_LINE_PTR, input.cmdlineAddr);
  if (input.initrd !== undefined) {
    setSplit(v, Hdr.RAMDISK_IMAGE, ZeroPage.EXT_RAMDISK_IMAGE, input.initrd.addr);
    setSplit(v, Hdr.RAMDISK_SIZE, ZeroPage.EXT_RAMDISK_SIZE, input.initrd.sizeBytes);
  }
  if (input.e820.length > E820_MAX_ENTRIES) throw new BootError(`memory map has ${input.e820.length} entries; the zero page holds ${E820_MAX_ENTRIES}`);
  v.setUint8(ZeroPage.E820_ENTRIES, input.e820.length);
  input.e820.forEach((e, i) => {
    const at = ZeroPage.E820_TABLE + i * E820_ENTRY_SIZE;
    v.setBigUint64(at, BigInt(e.addr), true);
    v.setBigUint64(at + 8, BigInt(e.size), true);
    v.setUint32(at + 16, e.type, true);
  });
  return page;
}

/** A 64-bit value split into the header's low 32 bits and the zero page's ext_* high 32 bits. */
function setSplit(v: DataView, lowAt: number, highAt: number, value: number): void {
  v.setUint32(lowAt, value >>> 0, true);
  v.setUint32(highAt, Math.floor(value / 2 ** 32), true);
}
