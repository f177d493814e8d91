import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { gpa, MiB } from '../../../src/arch/x86/layout.js';
import { BootError } from '../../../src/boot/boot-error.js';
import { parseElf32 } from '../../../src/boot/elf32.js';
import { memoryMap, upperMemoryBytes } from '../../../src/boot/memory-map.js';
import {
  MULTIBOOT_HEADER_MAGIC, findMultibootHeader, multibootInfo, parseMultibootKernel,
} from '../../../src/boot/multiboot.js';
import { ramLayout } from '../../../src/memory/guest-memory.js';
import { guest } from '../../helpers/paths.js';

/** A minimal ELF32 with one PT_LOAD segment at `paddr`, and a multiboot header at file offset 0x80. */
function makeElf(opts: { paddr?: number; entry?: number; flags?: number; checksum?: number; cls?: number } = {}): Uint8Array {
  const paddr = opts.paddr ?? 0x100000;
  const img = new Uint8Array(0x200);
  const v = new DataView(img.buffer);
  img.set([0x7f, 0x45, 0x4c, 0x46, opts.cls ?? 1, 1, 1]);
  v.setUint16(16, 2, true); // ET_EXEC
  v.setUint16(18, 3, true); // EM_386
  v.setUint32(24, opts.entry ?? paddr + 0x80, true);
  v.setUint32(28, 52, true); // phoff
  v.setUint16(42, 32, true);
  v.setUint16(44, 1, true);
  v.setUint32(52, 1, true); // PT_LOAD
  v.setUint32(56, 0, true); // offset
  v.setUint32(60, paddr, true); // vaddr
  v.setUint32(64, paddr, true); // paddr
  v.setUint32(68, 0x200, true); // filesz
  v.setUint32(72, 0x1000, true); // memsz
  const flags = opts.flags ?? 2;
  v.setUint32(0x80, MULTIBOOT_HEADER_MAGIC, true);
  v.setUint32(0x84, flags, true);
  v.setUint32(0x88, opts.checksum ?? (-(MULTIBOOT_HEADER_MAGIC + flags) >>> 0), true);
  return img;
}

describe('multiboot kernels', () => {
  it('accepts every guest we build, entering inside a segment above 1 MiB', () => {
    for (const name of ['hello', 'exit-code', 'spin', 'pio-loop', 'echo', 'triple-fault']) {
      const k = parseMultibootKernel(readFileSync(guest(name)));
      expect(k.start).toBeGreaterThanOrEqual(MiB);
      expect(k.entry).toBeGreaterThanOrEqual(k.start);
      expect(k.entry).toBeLessThan(k.end);
    }
  });

  it('finds the header and checks its checksum', () => {
    expect(findMultibootHeader(makeElf())?.offset).toBe(0x80);
    expect(findMultibootHeader(makeElf({ checksum: 1 }))).toBeUndefined();
    expect(() => parseMultibootKernel(makeElf({ checksum: 1 }))).toThrow(/no valid multiboot header/);
  });

  it('refuses requirements it does not understand', () => {
    expect(() => parseMultibootKernel(makeElf({ flags: 1 << 5 }))).toThrow(/flags 0x20/);
  });

  it('refuses ELF64, segments below 1 MiB and entry points outside the image', () => {
    expect(() => parseElf32(makeElf({ cls: 2 }))).toThrow(/ELF64/);
    expect(() => parseMultibootKernel(makeElf({ paddr: 0x8000 }))).toThrow(/below 1 MiB/);
    expect(() => parseMultibootKernel(makeElf({ entry: 0x500000 }))).toThrow(/entry point 0x500000/);
  });

  it('refuses truncated or lying program headers without reading past the file', () => {
    const img = makeElf();
    new DataView(img.buffer).setUint32(68, 0x10000, true); // filesz beyond the file
    expect(() => parseElf32(img)).toThrow(BootError);
    expect(() => parseElf32(img.subarray(0, 40))).toThrow(/truncated/);
  });
});

describe('memory map', () => {
  it('reports a PC layout: low RAM, EBDA and BIOS reserved, RAM from 1 MiB', () => {
    const map = memoryMap(ramLayout(256 * MiB));
    expect(map).toEqual([
      { start: 0, sizeBytes: 0x9fc00, type: 'ram' },
      { start: 0x9fc00, sizeBytes: 0x400, type: 'reserved' },
      { start: 0xf0000, sizeBytes: 0x10000, type: 'reserved' },
      { start: 0x100000, sizeBytes: 255 * MiB, type: 'ram' },
    ]);
    expect(upperMemoryBytes(map) / 1024).toBe(261120); // what QEMU's multiboot reports for -m 256M
  });

  it('puts RAM beyond 3 GiB above 4 GiB, merging regions the guest sees as one', () => {
    const map = memoryMap(ramLayout(8 * 1024 * MiB));
    expect(map.filter((e) => e.type === 'ram').map((e) => [e.start.toString(16), e.sizeBytes / MiB])).toEqual([
      ['0', 0x9fc00 / MiB], ['100000', 3 * 1024 - 1], ['100000000', 5 * 1024],
    ]);
  });
});

describe('multiboot information structure', () => {
  it('has the fields at the offsets of the specification', () => {
    const pieces = multibootInfo(memoryMap(ramLayout(256 * MiB)), 'hello.elf a=b');
    const info = new DataView(pieces[0]!.bytes.buffer);
    expect(pieces[0]!.address).toBe(gpa(0x9000));
    expect(info.getUint32(0, true)).toBe(0x1 | 0x4 | 0x40 | 0x200);
    expect(info.getUint32(4, true)).toBe(639); // mem_lower, KiB
    expect(info.getUint32(8, true)).toBe(261120); // mem_upper, KiB
    expect(info.getUint32(16, true)).toBe(0x9800); // cmdline
    expect(info.getUint32(44, true)).toBe(4 * 24); // mmap_length
    const mmap = new DataView(pieces[1]!.bytes.buffer);
    expect(mmap.getUint32(0, true)).toBe(20);
    expect(mmap.getBigUint64(3 * 24 + 4, true)).toBe(0x100000n);
    expect(mmap.getUint32(3 * 24 + 20, true)).toBe(1);
    expect(mmap.getUint32(1 * 24 + 20, true)).toBe(2);
    expect(new TextDecoder().decode(pieces[3]!.bytes)).toBe('hello.elf a=b\0');
  });

  it('refuses a command line that does not fit', () => {
    expect(() => multibootInfo([], 'x'.repeat(4096))).toThrow(/command line is 4096 bytes/);
  });
});
