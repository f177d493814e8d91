import { BootError } from './boot-error.js';
import { isElf64 } from './elf64.js';
import { parseLinuxBzImage, parseLinuxVmlinux, type LinuxKernel } from './linux.js';
import { findMultibootHeader, parseMultibootKernel, type MultibootKernel } from './multiboot.js';
import { isBzImage } from './setup-header.js';

/** A validated kernel file of one of the formats tsvmm boots. */
export type KernelImage =
  | { readonly kind: 'multiboot'; readonly kernel: MultibootKernel }
  | { readonly kind: 'linux'; readonly kernel: LinuxKernel };

/**
 * Decides the format from the file's own signatures, most specific first:
 *   1. "HdrS" at 0x202: a Linux bzImage (boot.rst), whatever else it contains;
 *   2. a multiboot header (0x1BADB002 with a valid checksum) in the first 8 KiB: a multiboot kernel
 *      (our test guests; ELF32 or a.out kludge);
 *   3. an ELF64 x86-64 executable: an uncompressed Linux vmlinux.
 * Anything else is refused, naming the three formats.
 */
export function parseKernelImage(image: Uint8Array): KernelImage {
  if (isBzImage(image)) return { kind: 'linux', kernel: parseLinuxBzImage(image) };
  if (findMultibootHeader(image) !== undefined) return { kind: 'multiboot', kernel: parseMultibootKernel(image) };
  if (isElf64(image)) return { kind: 'linux', kernel: parseLinuxVmlinux(image) };
  throw new BootError('not a kernel tsvmm can boot: neither a Linux bzImage ("HdrS" at 0x202), an ELF64 vmlinux, nor a multiboot kernel (header 0x1BADB002 in the first 8 KiB)');
}
