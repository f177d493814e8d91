import { BootError } from './boot-error.js';

/** What an ELF32 image asks to be loaded: its entry point and its PT_LOAD segments. */
export interface Elf32Image {
  readonly machine: number;
  readonly entry: number;
  readonly segments: readonly Elf32Segment[];
}

export interface Elf32Segment {
  /** Physical load address (p_paddr). */
  readonly paddr: number;
  /** Bytes taken from the file (p_filesz); the rest of memSize is zeroed. */
  readonly data: Uint8Array;
  readonly memSize: number;
}

const ELFCLASS32 = 1;
const ELFDATA2LSB = 1;
const ET_EXEC = 2;
const PT_LOAD = 1;
export const EM_386 = 3;
export const EM_X86_64 = 62;

export function isElf(image: Uint8Array): boolean {
  return image.length >= 4 && image[0] === 0x7f && image[1] === 0x45 && image[2] === 0x4c && image[3] === 0x46;
}

/**
 * Parses the program headers of a little-endian ELF32 executable (the format multiboot loaders, QEMU's
 * among them, accept). Every offset is bounds-checked: the file is user input.
 */
export function parseElf32(image: Uint8Array): Elf32Image {
  if (!isElf(image)) throw new BootError('not an ELF file (no \\x7fELF magic)');
  if (image.length < 52) throw new BootError('truncated ELF header');
  if (image[4] !== ELFCLASS32) {
    throw new BootError('ELF64 kernels are not multiboot images: link the kernel as ELF32 (objcopy -O elf32-i386)');
  }
  if (image[5] !== ELFDATA2LSB) throw new BootError('big-endian ELF cannot run on x86');
  const v = new DataView(image.buffer, image.byteOffset, image.byteLength);
  const type = v.getUint16(16, true);
  const machine = v.getUint16(18, true);
  if (type !== ET_EXEC) throw new BootError(`ELF type ${type} is not an executable (ET_EXEC)`);
  if (machine !== EM_386 && machine !== EM_X86_64) throw new BootError(`ELF machine ${machine} is not x86`);
  const entry = v.getUint32(24, true);
  const phoff = v.getUint32(28, true);
  const phentsize = v.getUint16(42, true);
  const phnum = v.getUint16(44, true);
  if (phentsize < 32 || phoff + phnum * phentsize > image.length) throw new BootError('ELF program headers lie outside the file');
  const segments: Elf32Segment[] = [];
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    if (v.getUint32(at, true) !== PT_LOAD) continue;
    const offset = v.getUint32(at + 4, true);
    const paddr = v.getUint32(at + 12, true);
    const fileSize = v.getUint32(at + 16, true);
    const memSize = v.getUint32(at + 20, true);
    if (offset + fileSize > image.length) throw new BootError(`ELF segment ${i} lies outside the file`);
    if (fileSize > memSize) throw new BootError(`ELF segment ${i} has p_filesz > p_memsz`);
    if (memSize === 0) continue;
    segments.push({ paddr, data: image.subarray(offset, offset + fileSize), memSize });
  }
  if (segments.length === 0) throw new BootError('ELF file has no loadable segment');
  return { machine, entry, segments };
}
