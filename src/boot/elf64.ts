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

/**
 * Parses a little-endian x86-64 ELF64 executable's PT_LOAD segments, by physical address, as
 * Firecracker's linux-loader does for vmlinux. Every offset is bounds-checked: the file is user input.
 */
export function parseElf64(image: Uint8Array): Elf64Image {
  if (!isElf64(image)) throw new BootError('not an ELF64 file');
  if (image.length < EHDR64_SIZE) throw new BootError('truncated ELF64 header');
  if (image[5] !== ELFDATA2LSB) throw new BootError('big-endian ELF cannot run on x86');
  const v = new DataView(image.buffer, image.byteOffset, image.byteLength);
  const type = v.getUint16(16, true);
  const machine = v.getUint16(18, true);
  if (type !== ET_EXEC) throw new BootError(`ELF type ${type} is not an executable (ET_EXEC)`);
  if (machine !== EM_X86_64) throw new BootError(`ELF64 machine ${machine} is not x86-64 (62)`);
  const entry = u64(v, 24, 'entry');
  const phoff = u64(v, 32, 'program header offset');
  const phentsize = v.getUint16(54, true);
  const phnum = v.getUint16(56, true);
  if (phentsize < PHDR64_SIZE || phoff + phnum * phentsize > image.length) throw new BootError('ELF program headers lie outside the file');
  const segments: Elf64Segment[] = [];
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    if (v.getUint32(at, true) !== PT_LOAD) continue;
    const offset = u64(v, at + 8, 'segment offset');
    const paddr = u64(v, at + 24, 'segment address');
    const fileSize = u64(v, at + 32, 'segment size');
    const memSize = u64(v, at + 40, 'segment size');
    if (offset + fileSize > image.length) throw new BootError(`ELF segment ${i} lies outside the file (is it truncated?)`);
    if (fileSize > memSize) throw new BootError(`ELF segment ${i} has p_filesz > p_memsz`);
    if (memSize === 0) continue;
    segments.push({ paddr, data: image.subarray(offset, offset + fileSize), memSize });
  }
  if (segments.length === 0) throw new BootError('ELF file has no loadable segment');
  return { entry, segments };
}
