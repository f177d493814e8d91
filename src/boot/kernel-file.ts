import { closeSync, fstatSync, openSync, readFileSync, readSync } from 'node:fs';
import { BootError } from './boot-error.js';
import { elf64HeadersEnd, isElf64, parseElf64Headers, trimSegmentZeroTails } from './elf64.js';
import { KernelCache, fileStamp, stampOf } from './kernel-cache.js';
import { parseKernelImage, type KernelImage } from './kernel-image.js';
import { declaredSize, unpackPayload } from './kernel-payload.js';
import { linuxVmlinux, parseUnpackedBzImage, type FileRange, type VmlinuxKernel } from './linux.js';
import { findMultibootHeader } from './multiboot.js';
import { isBzImage, parseSetupHeader, type SetupHeader } from './setup-header.js';

/**
 * Reads a file the user named as `what` (kernel, initrd), or its first `maxBytes`; every failure names
 * the file and the problem.
 */
export function readBootFile(what: string, file: string, maxBytes?: number): Uint8Array {
  try {
    if (maxBytes === undefined) return readFileSync(file);
    const fd = openSync(file, 'r');
    try {
      return readAt(fd, maxBytes, 0);
    } finally {
      closeSync(fd);
    }
  } catch (e) {
    throw bootFileError(what, file, e);
  }
}

function bootFileError(what: string, file: string, e: unknown): BootError {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return new BootError(`${what} file ${file} does not exist`);
  if (code === 'EISDIR') return new BootError(`${what} file ${file} is a directory`);
  if (code === 'EACCES') return new BootError(`${what} file ${file} is not readable (permission denied)`);
  return new BootError(`cannot read ${what} file ${file}: ${(e as Error).message}`);
}

/**
 * A whole file the user named as `what` (an initrd), left in the file for the loader to read straight
 * into guest RAM; a file that is missing, unreadable or not a regular file is a BootError now.
 */
export function bootFileRange(what: string, file: string): FileRange {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (e) {
    throw bootFileError(what, file, e);
  }
  try {
    const st = fstatSync(fd);
    if (st.isDirectory()) throw new BootError(`${what} file ${file} is a directory`);
    if (!st.isFile()) throw new BootError(`${what} file ${file} is not a regular file`);
    return { file, offset: 0, length: st.size };
  } finally {
    closeSync(fd);
  }
}

/** Enough of a file's start to tell its format: "HdrS" at 0x202, a multiboot header in the first 8 KiB, ELF's magic. */
const HEAD_BYTES = 16 * 1024;

/** Up to `length` bytes from `offset` of an open file (fewer at its end). */
function readAt(fd: number, length: number, offset: number): Uint8Array {
  const buf = new Uint8Array(length);
  let done = 0;
  for (let n; done < length && (n = readSync(fd, buf, done, length - done, offset + done)) > 0;) done += n;
  return buf.subarray(0, done);
}

/**
 * A vmlinux known from its headers only: its segments stay in the file as FileRanges, which the loader
 * reads straight into guest RAM.
 */
function readVmlinuxHeaders(file: string, fd: number, head: Uint8Array): VmlinuxKernel {
  const size = fstatSync(fd).size;
  const end = elf64HeadersEnd(head);
  const headers = end <= head.length ? head : readAt(fd, end, 0);
  const { entry, segments } = parseElf64Headers(headers, size);
  return linuxVmlinux({ entry, segments: segments.map((s) => ({ paddr: s.paddr, memSize: s.memSize, data: { file, offset: s.offset, length: s.fileSize } })) });
}

/** readVmlinuxHeaders of a file by name (`head`: its first bytes, if already read); an unreadable file is a BootError. */
function openVmlinux(file: string, head?: Uint8Array): VmlinuxKernel {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (e) {
    throw bootFileError('kernel', file, e);
  }
  try {
    return readVmlinuxHeaders(file, fd, head ?? readAt(fd, HEAD_BYTES, 0));
  } finally {
    closeSync(fd);
  }
}

/**
 * A bzImage this cache has unpacked before, booted from its first bytes (`head`, read while the file
 * had the stamp `before`) and the cached vmlinux, without reading the 8 MB of payload: the memo knows
 * the payload's key from the stamp, and the payload's last four bytes give the size to check the cached
 * file against. Undefined, to read the file whole, if the stamp is new, the file changed since `before`,
 * the header is not one parseBzImage takes (the whole read reports it), or the cache has no such file.
 */
function unpackedBefore(file: string, head: Uint8Array, before: string, cache: KernelCache): KernelImage | undefined {
  const key = cache.knownKey(before);
  if (key === undefined) return undefined;
  try {
    const fd = openSync(file, 'r');
    let header: SetupHeader;
    let size: number;
    try {
      const st = fstatSync(fd, { bigint: true });
      if (stampOf(st) !== before) return undefined;
      header = parseSetupHeader(head, Number(st.size));
      if (header.payloadRange === undefined) return undefined;
      const { offset, length } = header.payloadRange;
      size = declaredSize(readAt(fd, 4, offset + length - 4));
    } finally {
      closeSync(fd);
    }
    const cached = cache.lookup(key, size);
    return cached === undefined ? undefined : { kind: 'linux', kernel: { ...openVmlinux(cached), unpackedFrom: header } };
  } catch {
    return undefined;
  }
}

/** Who unpacks a bzImage's compressed kernel: tsvmm before the boot (the default), or the guest's decompressor. */
export type KernelDecompress = 'host' | 'guest';

export interface KernelFileOptions {
  readonly decompress?: KernelDecompress;
  readonly cache?: KernelCache;
  /** Told when a bzImage is left to the guest's decompressor for want of a host tool (which the user can install). */
  readonly onNotice?: (message: string) => void;
}

/**
 * Reads and validates a kernel file of any format tsvmm boots; errors start with the file's name.
 * A bzImage is unpacked on the host (through the cache) unless `decompress` is 'guest'; one the host
 * cannot unpack boots as a bzImage (and `onNotice` hears of a missing tool).
 */
export function readKernelFile(file: string, options: KernelFileOptions = {}): KernelImage {
  // The stamp, taken before any read and found again after, says the file did not change while it was
  // read: then the cache may know its payload's key without hashing it, or without reading it at all.
  const hostUnpacks = options.decompress !== 'guest';
  const before = hostUnpacks ? fileStamp(file) : undefined;
  // A vmlinux (ELF64 and neither of the other formats) is read from its headers; its segments are
  // loaded from the file later. Everything else is read whole and told apart by parseKernelImage.
  const head = readBootFile('kernel', file, HEAD_BYTES);
  try {
    if (isElf64(head) && !isBzImage(head) && findMultibootHeader(head) === undefined) {
      return { kind: 'linux', kernel: openVmlinux(file, head) };
    }
  } catch (e) {
    if (e instanceof BootError) throw new BootError(`${file}: ${e.message}`);
    throw e;
  }
  const cache = hostUnpacks ? options.cache ?? new KernelCache(KernelCache.defaultDir()) : undefined;
  if (cache !== undefined && before !== undefined && isBzImage(head)) {
    const seen = unpackedBefore(file, head, before, cache);
    if (seen !== undefined) return seen;
  }
  const image = readBootFile('kernel', file);
  const stamp = before !== undefined && fileStamp(file) === before ? before : undefined;
  try {
    const parsed = parseKernelImage(image);
    if (cache === undefined || parsed.kind !== 'linux' || parsed.kernel.format !== 'bzImage') return parsed;
    const { header } = parsed.kernel;
    if (header.payload === undefined) return parsed; // before protocol 2.08: only the guest knows where it is
    const key = cache.keyOf(header.payload, stamp);
    const size = declaredSize(header.payload);
    const cached = cache.lookup(key, size);
    if (cached !== undefined) {
      try {
        return { kind: 'linux', kernel: { ...openVmlinux(cached), unpackedFrom: header } };
      } catch {
        // Removed or damaged since the lookup (another tsvmm pruning, a disk error): unpack afresh.
      }
    }
    const unpacked = unpackPayload(header.payload);
    if (!unpacked.ok) {
      if (unpacked.reason === 'no-tool') options.onNotice?.(`${file}: the guest decompresses this kernel (slower): ${unpacked.why}`);
      return parsed;
    }
    parseUnpackedBzImage(header, unpacked.vmlinux); // a payload that is no vmlinux is reported as damaged
    trimSegmentZeroTails(unpacked.vmlinux);
    const kernel = parseUnpackedBzImage(header, unpacked.vmlinux);
    cache.store(key, unpacked.vmlinux);
    return { kind: 'linux', kernel };
  } catch (e) {
    if (e instanceof BootError) throw new BootError(`${file}: ${e.message}`);
    throw e;
  }
}
