import {
  BOOT_GDT_ADDR, HIGH_MEMORY_START, LOW_MEMORY_END, MULTIBOOT_CMDLINE_ADDR, MULTIBOOT_CMDLINE_MAX,
  MULTIBOOT_INFO_ADDR, MULTIBOOT_LOADER_NAME_ADDR, MULTIBOOT_MMAP_ADDR, gpa, type Gpa,
} from '../arch/x86/layout.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import { BootError } from './boot-error.js';
import { isElf, parseElf32, type Elf32Segment } from './elf32.js';
import { memoryMap, upperMemoryBytes, type MemoryMapEntry } from './memory-map.js';

/**
 * A multiboot (v1) loader, as specified in the Multiboot Specification 0.6.96 and as QEMU's `-kernel`
 * implements it: the kernel is an ELF32 image (or uses the a.out kludge) carrying a multiboot header in
 * its first 8 KiB; the loader places its segments, writes a multiboot information structure, and
 * enters it in flat 32-bit protected mode with EAX = 0x2BADB002 and EBX = the structure's address.
 */

export const MULTIBOOT_HEADER_MAGIC = 0x1badb002;
export const MULTIBOOT_BOOTLOADER_MAGIC = 0x2badb002;
/** The header must lie, 4-byte aligned, within this many bytes of the file's start. */
const MULTIBOOT_SEARCH = 8192;

/** Header flags (bits 0-15 are requirements a loader that does not understand must refuse). */
const HEADER_PAGE_ALIGN = 1 << 0;
const HEADER_MEMORY_INFO = 1 << 1;
const HEADER_VIDEO_MODE = 1 << 2;
const HEADER_AOUT_KLUDGE = 1 << 16;
const HEADER_KNOWN_REQUIREMENTS = HEADER_PAGE_ALIGN | HEADER_MEMORY_INFO | HEADER_VIDEO_MODE;

/** Info flags: which fields of the information structure are valid. */
const INFO_MEMORY = 1 << 0;
const INFO_CMDLINE = 1 << 2;
const INFO_MEM_MAP = 1 << 6;
const INFO_LOADER_NAME = 1 << 9;
const INFO_SIZE = 88;
const MMAP_ENTRY_SIZE = 24; // u32 size (of the rest: 20), u64 base, u64 length, u32 type
const MMAP_TYPE_RAM = 1;
const MMAP_TYPE_RESERVED = 2;

export interface MultibootHeader {
  /** Byte offset of the header in the file. */
  readonly offset: number;
  readonly flags: number;
  /** Present when the a.out kludge flag is set. */
  readonly addresses?: {
    headerAddr: number; loadAddr: number; loadEndAddr: number; bssEndAddr: number; entryAddr: number;
  };
}

/** Finds and validates the multiboot header; undefined if the file has none. */
export function findMultibootHeader(image: Uint8Array): MultibootHeader | undefined {
  const v = new DataView(image.buffer, image.byteOffset, image.byteLength);
  const limit = Math.min(image.length, MULTIBOOT_SEARCH) - 12;
  for (let at = 0; at <= limit; at += 4) {
    if (v.getUint32(at, true) !== MULTIBOOT_HEADER_MAGIC) continue;
    const flags = v.getUint32(at + 4, true);
    const checksum = v.getUint32(at + 8, true);
    if (((MULTIBOOT_HEADER_MAGIC + flags + checksum) & 0xffff_ffff) !== 0) continue;
    if (flags & HEADER_AOUT_KLUDGE) {
      if (at + 32 > image.length) throw new BootError('multiboot header truncated (a.out kludge addresses missing)');
      return {
        offset: at,
        flags,
        addresses: {
          headerAddr: v.getUint32(at + 12, true),
          loadAddr: v.getUint32(at + 16, true),
          loadEndAddr: v.getUint32(at + 20, true),
          bssEndAddr: v.getUint32(at + 24, true),
          entryAddr: v.getUint32(at + 28, true),
        },
      };
    }
    return { offset: at, flags };
  }
  return undefined;
}

/** What the loader leaves for the vCPU: where to start and what EAX/EBX hold. */
export interface MultibootEntry {
  readonly entry: Gpa;
  readonly eax: number;
  readonly ebx: Gpa;
  /** Where the loader placed the flat GDT the entry segments come from. */
  readonly gdt: Gpa;
  /** Loaded kernel range, for diagnostics. */
  readonly kernelStart: Gpa;
  readonly kernelEnd: Gpa;
}

/** The segments to load: from the ELF program headers, or from the a.out kludge addresses. */
function kernelSegments(image: Uint8Array, header: MultibootHeader): { entry: number; segments: Elf32Segment[] } {
  if (header.addresses !== undefined) {
    const a = header.addresses;
    // The file offset of load_addr follows from where the header sits: header_addr <-> header offset.
    const fileStart = header.offset - (a.headerAddr - a.loadAddr);
    const loadEnd = a.loadEndAddr === 0 ? a.loadAddr + (image.length - fileStart) : a.loadEndAddr;
    const bssEnd = a.bssEndAddr === 0 ? loadEnd : a.bssEndAddr;
    if (fileStart < 0 || loadEnd < a.loadAddr || fileStart + (loadEnd - a.loadAddr) > image.length || bssEnd < loadEnd) {
      throw new BootError('multiboot a.out kludge addresses are inconsistent with the file');
    }
    return {
      entry: a.entryAddr,
      segments: [{ paddr: a.loadAddr, data: image.subarray(fileStart, fileStart + loadEnd - a.loadAddr), memSize: bssEnd - a.loadAddr }],
    };
  }
  if (!isElf(image)) throw new BootError('multiboot kernel is neither ELF nor uses the a.out kludge');
  const elf = parseElf32(image);
  return { entry: elf.entry, segments: [...elf.segments] };
}

/** Encodes the multiboot information structure, its memory map and strings, at their fixed addresses. */
export function multibootInfo(map: readonly MemoryMapEntry[], cmdline: string): { address: Gpa; bytes: Uint8Array }[] {
  const cmdlineBytes = new TextEncoder().encode(cmdline);
  if (cmdlineBytes.length + 1 > MULTIBOOT_CMDLINE_MAX) {
    throw new BootError(`command line is ${cmdlineBytes.length} bytes; at most ${MULTIBOOT_CMDLINE_MAX - 1} fit`);
  }
  const mmap = new Uint8Array(map.length * MMAP_ENTRY_SIZE);
  const mv = new DataView(mmap.buffer);
  map.forEach((e, i) => {
    const at = i * MMAP_ENTRY_SIZE;
    mv.setUint32(at, MMAP_ENTRY_SIZE - 4, true);
    mv.setBigUint64(at + 4, BigInt(e.start), true);
    mv.setBigUint64(at + 12, BigInt(e.sizeBytes), true);
    mv.setUint32(at + 20, e.type === 'ram' ? MMAP_TYPE_RAM : MMAP_TYPE_RESERVED, true);
  });
  if (MULTIBOOT_MMAP_ADDR + mmap.length > MULTIBOOT_LOADER_NAME_ADDR) throw new BootError('memory map has too many entries');

  const info = new Uint8Array(INFO_SIZE);
  const iv = new DataView(info.buffer);
  const lowKiB = Math.floor(Math.min(LOW_MEMORY_END, ramEndBelow(map, LOW_MEMORY_END)) / 1024);
  iv.setUint32(0, INFO_MEMORY | INFO_CMDLINE | INFO_MEM_MAP | INFO_LOADER_NAME, true);
  iv.setUint32(4, lowKiB, true); // mem_lower
  iv.setUint32(8, Math.floor(upperMemoryBytes(map) / 1024), true); // mem_upper
  iv.setUint32(16, MULTIBOOT_CMDLINE_ADDR, true);
  iv.setUint32(44, mmap.length, true); // mmap_length
  iv.setUint32(48, MULTIBOOT_MMAP_ADDR, true); // mmap_addr
  iv.setUint32(64, MULTIBOOT_LOADER_NAME_ADDR, true);

  return [
    { address: MULTIBOOT_INFO_ADDR, bytes: info },
    { address: MULTIBOOT_MMAP_ADDR, bytes: mmap },
    { address: MULTIBOOT_LOADER_NAME_ADDR, bytes: new TextEncoder().encode('tsvmm\0') },
    { address: MULTIBOOT_CMDLINE_ADDR, bytes: Uint8Array.of(...cmdlineBytes, 0) },
  ];
}

function ramEndBelow(map: readonly MemoryMapEntry[], limit: number): number {
  const e = map.find((m) => m.type === 'ram' && m.start === 0);
  return e === undefined ? 0 : Math.min(limit, e.sizeBytes);
}

/**
 * The flat GDT the entry segments are described by: null, a 4 GiB code segment (selector 0x08) and a
 * 4 GiB data segment (0x10). Multiboot kernels must load their own, but a valid one costs nothing.
 */
export const BOOT_GDT = new BigUint64Array([0n, 0x00cf_9a00_0000_ffffn, 0x00cf_9200_0000_ffffn]);
export const BOOT_CODE_SELECTOR = 0x08;
export const BOOT_DATA_SELECTOR = 0x10;

/** A validated multiboot kernel, not yet placed in memory. */
export interface MultibootKernel {
  readonly entry: number;
  readonly segments: readonly Elf32Segment[];
  readonly start: number;
  readonly end: number;
}

/**
 * Validates a multiboot image without touching guest memory, so bad input is refused before a VM
 * exists: header present, requirements understood, segments above 1 MiB, entry inside a segment.
 */
export function parseMultibootKernel(image: Uint8Array): MultibootKernel {
  const header = findMultibootHeader(image);
  if (header === undefined) {
    throw new BootError('not a multiboot kernel: no valid multiboot header (magic 0x1BADB002) in its first 8 KiB');
  }
  const unknown = header.flags & 0xffff & ~HEADER_KNOWN_REQUIREMENTS;
  if (unknown !== 0) {
    throw new BootError(`multiboot header requires features this loader does not know (flags 0x${unknown.toString(16)})`);
  }
  const { entry, segments } = kernelSegments(image, header);
  let start = Number.MAX_SAFE_INTEGER;
  let end = 0;
  for (const s of segments) {
    if (s.paddr < HIGH_MEMORY_START) {
      throw new BootError(`kernel segment at 0x${s.paddr.toString(16)} lies below 1 MiB, where the loader keeps its data`);
    }
    start = Math.min(start, s.paddr);
    end = Math.max(end, s.paddr + s.memSize);
  }
  if (!segments.some((s) => entry >= s.paddr && entry < s.paddr + s.memSize)) {
    throw new BootError(`kernel entry point 0x${entry.toString(16)} lies outside its loaded segments`);
  }
  return { entry, segments, start, end };
}

/** Places a validated kernel and its multiboot information in `memory`; returns how to enter it. */
export function loadMultiboot(kernel: MultibootKernel, memory: GuestMemory, cmdline: string): MultibootEntry {
  for (const s of kernel.segments) {
    if (!memory.contains(gpa(s.paddr), s.memSize)) {
      throw new BootError(
        `kernel segment 0x${s.paddr.toString(16)}-0x${(s.paddr + s.memSize - 1).toString(16)} does not fit in guest RAM: give the VM more memory (--mem)`,
      );
    }
  }
  const info = multibootInfo(memoryMap(memory.regions), cmdline);
  for (const s of kernel.segments) {
    memory.write(gpa(s.paddr), s.data);
    memory.fill(gpa(s.paddr + s.data.length), s.memSize - s.data.length, 0);
  }
  for (const piece of info) memory.write(piece.address, piece.bytes);
  memory.write(BOOT_GDT_ADDR, new Uint8Array(BOOT_GDT.buffer));
  return {
    entry: gpa(kernel.entry),
    eax: MULTIBOOT_BOOTLOADER_MAGIC,
    ebx: MULTIBOOT_INFO_ADDR,
    gdt: BOOT_GDT_ADDR,
    kernelStart: gpa(kernel.start),
    kernelEnd: gpa(kernel.end),
  };
}
