import { BootError } from './boot-error.js';
import { EM_X86_64, isElf, type Elf32Segment } from './elf32.js';

/** An uncompressed x86-64 kernel (vmlinux) as its ELF64 program headers describe it. */
export interface Elf64Image {
  /** e_entry: for vmlinux, the physical address of startup_64 (the 64-bit boot protocol's entry). */
  readonly entry: number;
  readonly segments: readonly Elf64Segment[];
}

/** Same shape as an ELF32 segment; p_paddr matters because vmlinux links virtual but loads physical. */
export type Elf64Segment = Elf32Segment;

const ELFCLASS64 = 2;
const ELFDATA2LSB = 1;
const ET_EXEC = 2;
const PT_LOAD = 1;
const EHDR64_SIZE = 64;
const PHDR64_SIZE = 56;

export function isElf64(image: Uint8Array): boolean {
  return isElf(image) && image.length > 4 && image[4] === ELFCLASS64;
}

/** A u64 field as a Number, refusing values past 2^53 (no guest address is that large). */
function u64(v: DataView, at: number, what: string): number {
  const n = v.getBigUint64(at, true);
  if (n > BigInt(Number.MAX_SAFE_INTEGER)) throw new BootError(`ELF ${what} 0x${n.toString(16)} is out of range`);
  return Number(n);
}

/** A PT_LOAD program header: `fileSize` bytes from file `offset` go to `paddr`; the rest of `memSize` is zeroed. */
export interface Elf64SegmentHeader {
  /** Where in the file the program header itself lies. */
  readonly headerAt: number;
  readonly paddr: number;
  readonly offset: number;
  readonly fileSize: number;
  readonly memSize: number;
}

/** How many bytes from the file's start hold the ELF header and every program header (for a reader that reads only those). */
export function elf64HeadersEnd(head: Uint8Array): number {
  if (!isElf64(head)) throw new BootError('not an ELF64 file');
  if (head.length < EHDR64_SIZE) throw new BootError('truncated ELF64 header');
  const v = new DataView(head.buffer, head.byteOffset, head.byteLength);
  return Math.max(EHDR64_SIZE, u64(v, 32, 'program header offset') + v.getUint16(56, true) * v.getUint16(54, true));
}

/**
 * Parses a little-endian x86-64 ELF64 executable's PT_LOAD program headers, by physical address, as
 * Firecracker's linux-loader does for vmlinux, from `head` (the file's first bytes, at least up to
 * elf64HeadersEnd) and the file's size. Every offset is bounds-checked: the file is user input.
 */
export function parseElf64Headers(head: Uint8Array, fileSize: number): { entry: number; segments: Elf64SegmentHeader[] } {
  const end = elf64HeadersEnd(head);
  if (head[5] !== ELFDATA2LSB) throw new BootError('big-endian ELF cannot run on x86');
  const v = new DataView(head.buffer, head.byteOffset, head.byteLength);
  const type = v.getUint16(16, true);
  const machine = v.getUint16(18, true);
  if (type !== ET_EXEC) throw new BootError(`ELF type ${type} is not an executable (ET_EXEC)`);
  if (machine !== EM_X86_64) throw new BootError(`ELF64 machine ${machine} is not x86-64 (62)`);
  const entry = u64(v, 24, 'entry');
  const phoff = u64(v, 32, 'program header offset');
  const phentsize = v.getUint16(54, true);
  const phnum = v.getUint16(56, true);
  if (phentsize < PHDR64_SIZE || end > fileSize || end > head.length) throw new BootError('ELF program headers lie outside the file');
  const segments: Elf64SegmentHeader[] = [];
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    if (v.getUint32(at, true) !== PT_LOAD) continue;
    const offset = u64(v, at + 8, 'segment offset');
    const paddr = u64(v, at + 24, 'segment address');
    const segFileSize = u64(v, at + 32, 'segment size');
    const memSize = u64(v, at + 40, 'segment size');
    if (offset + segFileSize > fileSize) throw new BootError(`ELF segment ${i} lies outside the file (is it truncated?)`);
    if (segFileSize > memSize) throw new BootError(`ELF segment ${i} has p_filesz > p_memsz`);
    if (memSize === 0) continue;
    segments.push({ headerAt: at, paddr, offset, fileSize: segFileSize, memSize });
  }
  if (segments.length === 0) throw new BootError('ELF file has no loadable segment');
  return { entry, segments };
}

/** parseElf64Headers over a whole file in memory, each segment's bytes a view of it. */
export function parseElf64(image: Uint8Array): Elf64Image {
  const { entry, segments } = parseElf64Headers(image, image.length);
  return { entry, segments: segments.map((s) => ({ paddr: s.paddr, data: image.subarray(s.offset, s.offset + s.fileSize), memSize: s.memSize })) };
}

/**
 * Shrinks each PT_LOAD's p_filesz, in place, to end at the segment's last non-zero byte: the zeros cut
 * off fall into the p_memsz - p_filesz that a loader zero-fills, so the memory the file describes is
 * unchanged, but a loader into fresh (zero) RAM reads and writes less. Debian's vmlinux carries its
 * .bss and .brk as 24 MB of file zeros at the end of its last segment (40% of what it loads).
 * `image` must be a valid ELF64 file (parseElf64Headers throws a BootError otherwise).
 */
export function trimSegmentZeroTails(image: Uint8Array): void {
  const v = new DataView(image.buffer, image.byteOffset, image.byteLength);
  for (const { headerAt, offset, fileSize } of parseElf64Headers(image, image.length).segments) {
    let end = offset + fileSize;
    while (end > offset && image[end - 1] === 0) end--;
    v.setBigUint64(headerAt + 32, BigInt(end - offset), true); // p_filesz
  }
}
