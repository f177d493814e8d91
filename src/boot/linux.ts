import { closeSync, openSync, readSync } from 'node:fs';
import {
  BOOT_GDT_ADDR, BOOT_IDT_ADDR, HIGH_MEMORY_START, LINUX_CMDLINE_ADDR, LINUX_CMDLINE_MAX, MPTABLE_ADDR, PAGE_SIZE,
  ZERO_PAGE_ADDR, gpa, type Gpa,
} from '../arch/x86/layout.js';
import { LINUX_BOOT_GDT } from '../arch/x86/gdt.js';
import { buildMptable } from '../arch/x86/mptable.js';
import { identityPageTables } from '../arch/x86/page-tables.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import { BootError } from './boot-error.js';
import { buildBootParams, e820Entries, type E820Entry } from './boot-params.js';
import { parseElf64 } from './elf64.js';
import { memoryMap, type MemoryMapEntry } from './memory-map.js';
import { STARTUP_64_OFFSET, parseBzImage, type BzImageHeader, type SetupHeader } from './setup-header.js';

/**
 * The Linux x86 64-bit boot protocol (Documentation/arch/x86/boot.rst), without firmware, as Firecracker
 * and Cloud Hypervisor do it: the kernel is placed, boot_params (the zero page) is filled, and the BSP
 * enters startup_64 in long mode with identity-mapped page tables and RSI = boot_params.
 *
 * Two formats take the same path: a bzImage (its protected-mode part goes to pref_address and is
 * entered 0x200 in, where the decompressor's startup_64 lies), and an uncompressed ELF vmlinux (its
 * PT_LOAD segments go to their physical addresses and e_entry is the kernel's own startup_64, so the
 * decompressor is skipped). The PVH entry (XEN_ELFNOTE_PHYS32_ENTRY) would need a second, hvm_start_info
 * based handoff; the vmlinux's 64-bit entry with boot_params already skips the decompressor, so PVH
 * buys nothing here.
 */

export type LinuxKernel =
  | { readonly format: 'bzImage'; readonly header: BzImageHeader; readonly loadAddr: number; readonly entry: number; readonly end: number }
  | {
    readonly format: 'vmlinux'; readonly segments: readonly VmlinuxSegment[]; readonly entry: number; readonly end: number;
    /**
     * The bzImage this vmlinux was unpacked from on the host (see kernel-payload.ts): its setup header
     * goes into boot_params as a bzImage's would, and its cmdline_size and initrd_addr_max hold.
     */
    readonly unpackedFrom?: SetupHeader;
  };

/**
 * Bytes that stay in a file until the loader reads them straight into guest RAM: a 66 MB vmlinux read
 * into the JS heap first cost 260 ms on this host (fresh 4 KiB pages) and a second copy, against 8 ms
 * read into guest RAM (huge pages).
 */
export interface FileRange {
  readonly file: string;
  readonly offset: number;
  readonly length: number;
}

/** A vmlinux PT_LOAD segment: `data` goes to `paddr`, then zeros up to `memSize`. */
export interface VmlinuxSegment {
  readonly paddr: number;
  readonly data: Uint8Array | FileRange;
  readonly memSize: number;
}

/** x86's COMMAND_LINE_SIZE (arch/x86/include/asm/setup.h) less the NUL: the limit for a vmlinux, which has no cmdline_size. */
const VMLINUX_CMDLINE_MAX = 2047;
/** Debian's and every x86-64 kernel's initrd_addr_max: a vmlinux carries no header to say so. */
const VMLINUX_INITRD_ADDR_MAX = 0x7fff_ffff;

/** Validates a bzImage and decides where it goes; throws BootError naming the problem. */
export function parseLinuxBzImage(image: Uint8Array): LinuxKernel {
  const header = parseBzImage(image);
  // A relocatable kernel goes to pref_address (boot.rst: "load at pref_address if possible"); an old
  // non-relocatable one must be at 1 MiB, its code32_start.
  const loadAddr = header.relocatable && header.prefAddress >= HIGH_MEMORY_START ? header.prefAddress : HIGH_MEMORY_START;
  if (header.relocatable && header.kernelAlignment > 0 && loadAddr % header.kernelAlignment !== 0 && loadAddr !== HIGH_MEMORY_START) {
    throw new BootError(`bzImage pref_address 0x${loadAddr.toString(16)} is not a multiple of its kernel_alignment 0x${header.kernelAlignment.toString(16)}`);
  }
  const end = loadAddr + Math.max(header.kernel.length, header.initSize);
  return { format: 'bzImage', header, loadAddr, entry: loadAddr + STARTUP_64_OFFSET, end };
}

export type VmlinuxKernel = Extract<LinuxKernel, { readonly format: 'vmlinux' }>;

/** Validates an ELF64 vmlinux: loadable segments above 1 MiB, entry inside one. */
export function parseLinuxVmlinux(image: Uint8Array): VmlinuxKernel {
  return linuxVmlinux(parseElf64(image));
}

/** A vmlinux from its entry and segments, checked: loadable segments above 1 MiB, entry inside one. */
export function linuxVmlinux(elf: { readonly entry: number; readonly segments: readonly VmlinuxSegment[] }): VmlinuxKernel {
  let end = 0;
  for (const s of elf.segments) {
    if (s.paddr < HIGH_MEMORY_START) {
      throw new BootError(`vmlinux segment at physical 0x${s.paddr.toString(16)} lies below 1 MiB, where the loader keeps boot data: is this a Linux kernel?`);
    }
    end = Math.max(end, s.paddr + s.memSize);
  }
  if (!elf.segments.some((s) => elf.entry >= s.paddr && elf.entry < s.paddr + s.memSize)) {
    throw new BootError(`vmlinux entry point 0x${elf.entry.toString(16)} is not a physical address inside its segments: is this a Linux kernel?`);
  }
  return { format: 'vmlinux', segments: elf.segments, entry: elf.entry, end };
}

/**
 * A bzImage's payload, unpacked on the host, booted as a vmlinux: the kernel's own startup_64 at its
 * link address, so the guest runs no decompressor. As with any vmlinux, nothing randomises the kernel's
 * base (the decompressor does KASLR); `--kernel-decompress guest` keeps the bzImage path for that.
 */
export function parseUnpackedBzImage(header: SetupHeader, vmlinux: Uint8Array): LinuxKernel {
  let kernel: VmlinuxKernel;
  try {
    kernel = parseLinuxVmlinux(vmlinux);
  } catch (e) {
    if (e instanceof BootError) throw new BootError(`the bzImage's payload unpacks to something that is not a vmlinux (${e.message}): the file is damaged`);
    throw e;
  }
  return { ...kernel, unpackedFrom: header };
}

/** The setup header that speaks for the kernel: a bzImage's own, or the one a vmlinux was unpacked from. */
function setupHeaderOf(kernel: LinuxKernel): SetupHeader | undefined {
  return kernel.format === 'bzImage' ? kernel.header : kernel.unpackedFrom;
}

/** The longest command line (without its NUL) the kernel accepts. */
export function cmdlineLimit(kernel: LinuxKernel): number {
  const own = setupHeaderOf(kernel)?.cmdlineSize ?? VMLINUX_CMDLINE_MAX;
  return Math.min(own, LINUX_CMDLINE_MAX - 1);
}

/** The command line as the kernel will read it, NUL-terminated, or a BootError if it is too long. */
export function encodeCmdline(kernel: LinuxKernel, cmdline: string): Uint8Array {
  const bytes = new TextEncoder().encode(cmdline);
  const limit = cmdlineLimit(kernel);
  if (bytes.length > limit) {
    throw new BootError(`command line is ${bytes.length} bytes; this kernel accepts at most ${limit} (its cmdline_size): shorten --cmdline`);
  }
  if (bytes.includes(0)) throw new BootError('command line contains a NUL byte');
  return Uint8Array.of(...bytes, 0);
}

/** The end of RAM that starts at 1 MiB: the kernel, the initrd and the boot data must lie below it. */
function lowRamEnd(map: readonly MemoryMapEntry[]): number {
  const e = map.find((m) => m.type === 'ram' && m.start <= HIGH_MEMORY_START && m.start + m.sizeBytes > HIGH_MEMORY_START);
  return e === undefined ? 0 : e.start + e.sizeBytes;
}

/**
 * Where the initrd goes: as high as allowed (page-aligned, wholly below initrd_addr_max and below the
 * end of low RAM), as GRUB and QEMU place it, and above the kernel's init_size so the decompressor
 * cannot overwrite it.
 */
export function placeInitrd(kernel: LinuxKernel, map: readonly MemoryMapEntry[], sizeBytes: number): Gpa {
  const addrMax = setupHeaderOf(kernel)?.initrdAddrMax ?? VMLINUX_INITRD_ADDR_MAX;
  const limit = Math.min(addrMax + 1, lowRamEnd(map)); // exclusive
  const addr = Math.floor((limit - sizeBytes) / PAGE_SIZE) * PAGE_SIZE;
  const floor = Math.ceil(kernel.end / PAGE_SIZE) * PAGE_SIZE;
  if (sizeBytes <= 0 || addr < floor) {
    throw new BootError(
      `initrd of ${sizeBytes} bytes does not fit between the kernel's end (0x${floor.toString(16)}) and 0x${limit.toString(16)} ` +
      `(the lower of initrd_addr_max and the end of RAM below 4 GiB): give the VM more memory (--mem) or use a smaller initrd`,
    );
  }
  return gpa(addr);
}

/** What the BSP needs to enter the kernel. */
export interface LinuxEntry {
  readonly entry: Gpa;
  readonly bootParams: Gpa;
  readonly format: LinuxKernel['format'];
  /** The e820 map written into boot_params (the kernel prints it at boot). */
  readonly e820: readonly E820Entry[];
  readonly initrd?: { readonly addr: Gpa; readonly sizeBytes: number };
}

/** One write the loader makes into guest RAM: `bytes`, or `zeroBytes` zeros, or a range of a file. */
export interface LoadPiece {
  readonly address: Gpa;
  readonly bytes?: Uint8Array;
  readonly zeroBytes?: number;
  readonly fromFile?: FileRange;
}

/** The piece that puts `data` at `address`: bytes in hand, or a range still in its file. */
function piece(address: Gpa, data: Uint8Array | FileRange): LoadPiece {
  return data instanceof Uint8Array ? { address, bytes: data } : { address, fromFile: data };
}

/**
 * Everything the loader writes, as a pure function of the kernel, the memory map and the options, so
 * the whole layout is tested without KVM: kernel, zero page, command line, initrd, page tables, GDT,
 * IDT and MP table.
 */
export function planLinuxBoot(
  kernel: LinuxKernel,
  map: readonly MemoryMapEntry[],
  options: { readonly cmdline: string; readonly initrd?: Uint8Array | FileRange; readonly cpus: number },
): { pieces: LoadPiece[]; entry: LinuxEntry } {
  const ramEnd = lowRamEnd(map);
  if (kernel.end > ramEnd) {
    throw new BootError(`the kernel needs RAM up to 0x${kernel.end.toString(16)} (its init_size) but RAM below 4 GiB ends at 0x${ramEnd.toString(16)}: give the VM more memory (--mem)`);
  }
  const cmdline = encodeCmdline(kernel, options.cmdline);
  const pieces: LoadPiece[] = [];
  if (kernel.format === 'bzImage') {
    pieces.push({ address: gpa(kernel.loadAddr), bytes: kernel.header.kernel });
  } else {
    for (const s of kernel.segments) {
      pieces.push(piece(gpa(s.paddr), s.data));
      if (s.memSize > s.data.length) pieces.push({ address: gpa(s.paddr + s.data.length), zeroBytes: s.memSize - s.data.length });
    }
  }
  let initrd: LinuxEntry['initrd'];
  if (options.initrd !== undefined) {
    initrd = { addr: placeInitrd(kernel, map, options.initrd.length), sizeBytes: options.initrd.length };
    pieces.push(piece(initrd.addr, options.initrd));
  }
  const e820 = e820Entries(map);
  const bootParams = buildBootParams({
    setupHeader: setupHeaderOf(kernel)?.raw,
    kernelAddr: gpa(kernel.format === 'bzImage' ? kernel.loadAddr : kernel.entry),
    cmdlineAddr: LINUX_CMDLINE_ADDR,
    initrd,
    e820,
  });
  pieces.push({ address: ZERO_PAGE_ADDR, bytes: bootParams });
  pieces.push({ address: LINUX_CMDLINE_ADDR, bytes: cmdline });
  for (const t of identityPageTables()) pieces.push(t);
  pieces.push({ address: BOOT_GDT_ADDR, bytes: new Uint8Array(LINUX_BOOT_GDT.buffer) });
  pieces.push({ address: BOOT_IDT_ADDR, zeroBytes: 8 });
  pieces.push({ address: MPTABLE_ADDR, bytes: buildMptable(MPTABLE_ADDR, options.cpus) });
  return { pieces, entry: { entry: gpa(kernel.entry), bootParams: ZERO_PAGE_ADDR, format: kernel.format, e820, initrd } };
}

/**
 * Writes the plan into guest RAM through GuestMemory, which marks every page it touches (invariant B).
 * With `ramIsZero` (RAM fresh from GuestMemory.create, never written) the plan's zero runs (a segment's
 * p_memsz past its p_filesz: .bss) are already there and are not written: nothing touches those pages,
 * so they stay unallocated and clean, and read as zeros on a migration's destination too.
 */
export function loadLinux(
  kernel: LinuxKernel,
  memory: GuestMemory,
  options: { readonly cmdline: string; readonly initrd?: Uint8Array | FileRange; readonly cpus: number; readonly ramIsZero?: boolean },
): LinuxEntry {
  const { pieces, entry } = planLinuxBoot(kernel, memoryMap(memory.regions), options);
  for (const p of pieces) {
    if (p.bytes !== undefined) memory.write(p.address, p.bytes);
    else if (p.fromFile !== undefined) readIntoGuest(memory, p.address, p.fromFile);
    else if (!options.ramIsZero) memory.fill(p.address, p.zeroBytes ?? 0, 0);
  }
  return entry;
}

/** Reads a file range straight into guest RAM; a file that ends early (changed since it was checked) is a BootError. */
function readIntoGuest(memory: GuestMemory, address: Gpa, range: FileRange): void {
  const fd = openSync(range.file, 'r');
  try {
    memory.writeWith(address, range.length, (target) => {
      for (let done = 0; done < range.length;) {
        const n = readSync(fd, target, done, range.length - done, range.offset + done);
        if (n === 0) throw new BootError(`${range.file} ended ${range.offset + done} bytes in, while loading ${range.length} bytes from ${range.offset}: was it changed since it was read?`);
        done += n;
      }
    });
  } finally {
    closeSync(fd);
  }
}
