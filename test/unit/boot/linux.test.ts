import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  BOOT_GDT_ADDR, GiB, LINUX_CMDLINE_ADDR, MPTABLE_ADDR, MiB, ZERO_PAGE_ADDR, gpa,
} from '../../../src/arch/x86/layout.js';
import { BootError } from '../../../src/boot/boot-error.js';
import { parseElf64, trimSegmentZeroTails } from '../../../src/boot/elf64.js';
import { E820_RAM, E820_RESERVED, ZeroPage, buildBootParams, e820Entries } from '../../../src/boot/boot-params.js';
import { parseKernelImage } from '../../../src/boot/kernel-image.js';
import {
  encodeCmdline, parseLinuxBzImage, parseLinuxVmlinux, placeInitrd, planLinuxBoot,
} from '../../../src/boot/linux.js';
import { memoryMap } from '../../../src/boot/memory-map.js';
import { Hdr, parseBzImage } from '../../../src/boot/setup-header.js';
import { ramLayout } from '../../../src/memory/guest-memory.js';
import { makeBzImage, makeVmlinux } from '../../helpers/linux-images.js';
import { guest } from '../../helpers/paths.js';

const map256M = memoryMap(ramLayout(256 * MiB));

describe('the bzImage setup header (Documentation/arch/x86/boot.rst, "The Real-Mode Kernel Header")', () => {
  it('names the fields at the offsets boot.rst gives', () => {
    expect(Hdr).toMatchObject({
      SETUP_SECTS: 0x1f1, VID_MODE: 0x1fa, BOOT_FLAG: 0x1fe, JUMP: 0x200, HEADER: 0x202, VERSION: 0x206,
      TYPE_OF_LOADER: 0x210, LOADFLAGS: 0x211, CODE32_START: 0x214, RAMDISK_IMAGE: 0x218, RAMDISK_SIZE: 0x21c,
      HEAP_END_PTR: 0x224, CMD_LINE_PTR: 0x228, INITRD_ADDR_MAX: 0x22c, KERNEL_ALIGNMENT: 0x230,
      RELOCATABLE_KERNEL: 0x234, XLOADFLAGS: 0x236, CMDLINE_SIZE: 0x238, PAYLOAD_OFFSET: 0x248, PAYLOAD_LENGTH: 0x24c, PREF_ADDRESS: 0x258, INIT_SIZE: 0x260,
    });
    expect(ZeroPage).toEqual({ EXT_RAMDISK_IMAGE: 0xc0, EXT_RAMDISK_SIZE: 0xc4, EXT_CMD_LINE_PTR: 0xc8, E820_ENTRIES: 0x1e8, E820_TABLE: 0x2d0 });
  });

  it('reads the fields a loader needs', () => {
    const h = parseBzImage(makeBzImage({ setupSects: 6, cmdlineSize: 0x7ff, initrdAddrMax: 0x37ffffff, initSize: 0x3f98000 }));
    expect(h).toMatchObject({
      protocol: 0x020f, setupSects: 6, relocatable: true, kernelAlignment: 0x200000, initrdAddrMax: 0x37ffffff,
      cmdlineSize: 0x7ff, prefAddress: 0x1000000, initSize: 0x3f98000,
    });
    expect(h.kernel.length).toBe(0x1000); // everything after (6 + 1) * 512 bytes
    expect(h.raw[0]).toBe(6); // the header copy starts at setup_sects (0x1f1)
    expect(parseBzImage(makeBzImage({ setupSects: 0 })).setupSects).toBe(4); // boot.rst: 0 means 4
  });

  it('refuses what it cannot boot, saying why', () => {
    expect(() => parseBzImage(makeBzImage({ magic: 0x12345678 }))).toThrow(/not a bzImage: no "HdrS"/);
    expect(() => parseBzImage(makeBzImage({ version: 0x0205 }))).toThrow(/boot protocol 2.05 is too old: tsvmm needs 2.06 or newer/);
    expect(() => parseBzImage(makeBzImage({ xloadflags: 0 }))).toThrow(/no 64-bit entry point \(XLF_KERNEL_64\)/);
    expect(() => parseBzImage(makeBzImage({ loadflags: 0 }))).toThrow(/zImage/);
    expect(() => parseBzImage(makeBzImage({ setupSects: 40, payload: 0 }).subarray(0, 4096))).toThrow(/truncated/);
  });

  it("parses this machine's Debian kernel, if it has one", () => {
    let image: Uint8Array;
    try {
      image = readFileSync('/boot/vmlinuz-6.1.0-56-amd64');
    } catch {
      return; // not every host has it; the synthetic images above cover the rules
    }
    const k = parseLinuxBzImage(image);
    expect(k.format).toBe('bzImage');
    expect(k.entry).toBe(0x1000200);
  });
});

describe('kernel format detection', () => {
  it('tells multiboot, bzImage and vmlinux apart, and refuses anything else', () => {
    expect(parseKernelImage(readFileSync(guest('hello'))).kind).toBe('multiboot');
    expect(parseKernelImage(makeBzImage())).toMatchObject({ kind: 'linux', kernel: { format: 'bzImage' } });
    expect(parseKernelImage(makeVmlinux())).toMatchObject({ kind: 'linux', kernel: { format: 'vmlinux', entry: 0x1000000 } });
    expect(() => parseKernelImage(new Uint8Array(4096))).toThrow(/neither a Linux bzImage .* an ELF64 vmlinux, nor a multiboot kernel/);
    expect(() => parseLinuxVmlinux(makeVmlinux(0x1000000, 0x5000000))).toThrow(/entry point 0x5000000/);
    expect(() => parseLinuxVmlinux(makeVmlinux(0x8000))).toThrow(/below 1 MiB/);
  });
});

describe('the e820 map', () => {
  it('has RAM below 640 KiB, the EBDA and BIOS area reserved, RAM from 1 MiB, the MMIO hole, RAM above 4 GiB', () => {
    expect(e820Entries(map256M)).toEqual([
      { addr: 0, size: 0x9fc00, type: E820_RAM },
      { addr: 0x9fc00, size: 0x400, type: E820_RESERVED },
      { addr: 0xf0000, size: 0x10000, type: E820_RESERVED },
      { addr: 0x100000, size: 256 * MiB - 0x100000, type: E820_RAM },
    ]);
    const big = e820Entries(memoryMap(ramLayout(5 * GiB)));
    expect(big.at(-2)).toEqual({ addr: 0x100000, size: 3 * GiB - 0x100000, type: E820_RAM });
    expect(big.at(-1)).toEqual({ addr: 4 * GiB, size: 2 * GiB, type: E820_RAM });
  });
});

describe('boot_params (the zero page)', () => {
  it('copies the setup header and writes the loader fields and e820 at their offsets', () => {
    const k = parseLinuxBzImage(makeBzImage());
    if (k.format !== 'bzImage') throw new Error('unreachable');
    const page = buildBootParams({
      setupHeader: k.header.raw, kernelAddr: gpa(0x1000000), cmdlineAddr: gpa(0x20000),
      initrd: { addr: gpa(0x7000_0000), sizeBytes: 0x12345 }, e820: e820Entries(map256M),
    });
    const v = new DataView(page.buffer);
    expect(page.length).toBe(4096);
    expect(v.getUint32(0x202, true)).toBe(0x53726448);
    expect(v.getUint16(0x206, true)).toBe(0x020f);
    expect(v.getUint8(0x210)).toBe(0xff); // type_of_loader: undefined loader
    expect(v.getUint8(0x211) & 0x81).toBe(0x81); // LOADED_HIGH | CAN_USE_HEAP
    expect(v.getUint32(0x214, true)).toBe(0x1000000);
    expect(v.getUint32(0x218, true)).toBe(0x7000_0000);
    expect(v.getUint32(0x21c, true)).toBe(0x12345);
    expect(v.getUint32(0x228, true)).toBe(0x20000);
    expect(v.getUint32(0xc8, true)).toBe(0);
    expect(v.getUint8(0x1e8)).toBe(4);
    expect(v.getBigUint64(0x2d0 + 3 * 20, true)).toBe(0x100000n);
    expect(v.getBigUint64(0x2d0 + 3 * 20 + 8, true)).toBe(BigInt(255 * MiB));
    expect(v.getUint32(0x2d0 + 3 * 20 + 16, true)).toBe(1);
  });

  it('writes the header fields a vmlinux lacks', () => {
    const v = new DataView(buildBootParams({ kernelAddr: gpa(0x1000000), cmdlineAddr: gpa(0x20000), e820: [] }).buffer);
    expect(v.getUint16(0x1fe, true)).toBe(0xaa55);
    expect(v.getUint32(0x202, true)).toBe(0x53726448);
    expect(v.getUint8(0x210)).toBe(0xff);
  });
});

describe('command line and initrd', () => {
  it('takes a command line up to cmdline_size and refuses a longer one', () => {
    const k = parseLinuxBzImage(makeBzImage({ cmdlineSize: 16 }));
    expect(encodeCmdline(k, 'console=ttyS0').at(-1)).toBe(0);
    expect(encodeCmdline(k, 'x'.repeat(16)).length).toBe(17);
    expect(() => encodeCmdline(k, 'x'.repeat(17))).toThrow(/17 bytes; this kernel accepts at most 16/);
    expect(() => encodeCmdline(parseLinuxVmlinux(makeVmlinux()), 'x'.repeat(2048))).toThrow(/at most 2047/);
  });

  it('places the initrd as high as allowed, page-aligned, below initrd_addr_max and the end of RAM', () => {
    const k = parseLinuxBzImage(makeBzImage());
    const at = placeInitrd(k, map256M, 1_000_000);
    expect(at % 4096).toBe(0);
    expect(at + 1_000_000).toBeLessThanOrEqual(256 * MiB);
    expect(at + 1_000_000 + 4096).toBeGreaterThan(256 * MiB);
    const low = parseLinuxBzImage(makeBzImage({ initrdAddrMax: 0x3fffffff }));
    const at4G = placeInitrd(low, memoryMap(ramLayout(2 * GiB)), 4096);
    expect(at4G).toBe(0x3fff_f000);
  });

  it('refuses an initrd that does not fit, naming the fix', () => {
    const k = parseLinuxBzImage(makeBzImage());
    expect(() => placeInitrd(k, map256M, 250 * MiB)).toThrow(BootError);
    expect(() => placeInitrd(k, map256M, 250 * MiB)).toThrow(/initrd of 262144000 bytes does not fit .*\(--mem\)/);
  });
});

describe('planLinuxBoot', () => {
  it('writes kernel, zero page, command line, initrd, page tables, GDT and MP table where boot.rst wants them', () => {
    const k = parseLinuxBzImage(makeBzImage());
    const { pieces, entry } = planLinuxBoot(k, map256M, { cmdline: 'console=ttyS0', initrd: new Uint8Array(8192), cpus: 2 });
    const at = (a: number) => pieces.find((p) => p.address === a);
    expect(entry).toMatchObject({ entry: 0x1000200, bootParams: ZERO_PAGE_ADDR, format: 'bzImage' });
    expect(at(0x1000000)?.bytes?.length).toBe(0x1000);
    expect(at(LINUX_CMDLINE_ADDR)?.bytes).toEqual(new TextEncoder().encode('console=ttyS0\0'));
    expect(at(BOOT_GDT_ADDR)?.bytes?.length).toBe(40);
    expect(new TextDecoder().decode(at(MPTABLE_ADDR)?.bytes?.subarray(0, 4))).toBe('_MP_');
    const zp = new DataView(at(ZERO_PAGE_ADDR)!.bytes!.buffer);
    expect(zp.getUint32(0x218, true)).toBe(entry.initrd!.addr);
    // No two pieces overlap.
    const ranges = pieces.map((p) => [p.address, p.address + (p.bytes?.length ?? p.zeroBytes ?? 0)] as const).sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < ranges.length; i++) expect(ranges[i]![0]).toBeGreaterThanOrEqual(ranges[i - 1]![1]);
  });

  it('refuses a kernel whose init_size does not fit in RAM', () => {
    const k = parseLinuxBzImage(makeBzImage({ initSize: 300 * MiB }));
    expect(() => planLinuxBoot(k, map256M, { cmdline: '', cpus: 1 })).toThrow(/needs RAM up to .*\(--mem\)/);
  });
});

describe('trimSegmentZeroTails (a vmlinux unpacked on the host, before it is cached)', () => {
  /** The bytes each segment puts in memory: its file bytes, then zeros up to p_memsz. */
  const memoryImage = (image: Uint8Array) => parseElf64(image).segments.map((s) => {
    const m = new Uint8Array(s.memSize);
    m.set(s.data);
    return { paddr: s.paddr, bytes: m };
  });

  it('cuts each segment\'s file bytes at its last non-zero byte and leaves the memory it describes unchanged', () => {
    const vmlinux = makeVmlinux();
    const before = memoryImage(vmlinux);
    trimSegmentZeroTails(vmlinux);
    expect(parseElf64(vmlinux).segments.map((s) => s.data.length)).toEqual([0x600]);
    expect(memoryImage(vmlinux)).toEqual(before);
    // A segment of zeros only keeps no file bytes at all.
    const zeros = makeVmlinux();
    zeros.fill(0, 0x200, 0xa00);
    trimSegmentZeroTails(zeros);
    expect(parseElf64(zeros).segments).toMatchObject([{ paddr: 0x1000000, memSize: 0x10000, data: { length: 0 } }]);
  });

  it('refuses what is not a valid ELF64 executable, as the parser does', () => {
    expect(() => trimSegmentZeroTails(new Uint8Array(4096))).toThrow(BootError);
  });
});
