import { readFileSync, readdirSync, statSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { MiB, ZERO_PAGE_ADDR, gpa } from '../../../src/arch/x86/layout.js';
import { KernelCache } from '../../../src/boot/kernel-cache.js';
import { bootFileRange, readKernelFile } from '../../../src/boot/kernel-file.js';
import { loadLinux, planLinuxBoot } from '../../../src/boot/linux.js';
import { memoryMap } from '../../../src/boot/memory-map.js';
import { GuestMemory, ramLayout } from '../../../src/memory/guest-memory.js';
import { compressAsKbuild, makeBzImage, makeVmlinux } from '../../helpers/linux-images.js';
import { scratchDirs, withoutTools } from '../../helpers/scratch.js';

const tempDir = scratchDirs('tsvmm-kfile-');

/** A bzImage file whose payload is makeVmlinux() compressed as `format`, and a cache beside it. */
function bzImageFile(format: 'gzip' | 'xz', o: Parameters<typeof makeBzImage>[0] = {}): { file: string; cache: KernelCache } {
  const dir = tempDir();
  const file = path.join(dir, 'vmlinuz');
  writeFileSync(file, makeBzImage({ ...o, compressed: compressAsKbuild(makeVmlinux(), format) }));
  return { file, cache: new KernelCache(path.join(dir, 'cache')) };
}


describe('readKernelFile and a bzImage', () => {
  it('unpacks the payload on the host and boots it as a vmlinux that keeps the bzImage\'s header', () => {
    const { file, cache } = bzImageFile('gzip', { setupSects: 6, cmdlineSize: 100 });
    const image = readKernelFile(file, { cache });
    expect(image).toMatchObject({ kind: 'linux', kernel: { format: 'vmlinux', entry: 0x1000000, unpackedFrom: { setupSects: 6 } } });
    if (image.kind !== 'linux') throw new Error('not linux');
    // boot_params carries the bzImage's setup header, and its cmdline_size is the limit.
    const { pieces } = planLinuxBoot(image.kernel, memoryMap(ramLayout(256 * MiB)), { cmdline: 'x', cpus: 1 });
    const zeroPage = pieces.find((p) => p.address === ZERO_PAGE_ADDR)!.bytes!;
    expect(zeroPage[0x1f1]).toBe(6);
    expect(new DataView(zeroPage.buffer, zeroPage.byteOffset).getUint32(0x202, true)).toBe(0x53726448);
    expect(() => planLinuxBoot(image.kernel, memoryMap(ramLayout(256 * MiB)), { cmdline: 'y'.repeat(101), cpus: 1 }))
      .toThrow(/accepts at most 100/);
    // The segment went where the vmlinux says, from the unpacked bytes, less its zero tail (which the
    // loader leaves to fresh RAM: trimSegmentZeroTails).
    expect(pieces.find((p) => p.address === 0x1000000)?.bytes?.length).toBe(0x600);
    expect(pieces.find((p) => p.address === 0x1000600)?.zeroBytes).toBe(0x10000 - 0x600);
  });

  it('unpacks once: the next boot takes the cached vmlinux, even where the tool is gone', () => {
    const { file, cache } = bzImageFile('xz');
    expect(readKernelFile(file, { cache })).toMatchObject({ kernel: { format: 'vmlinux' } });
    const unpacked = readdirSync(cache.dir).filter((f) => f.startsWith('vmlinux-'));
    expect(unpacked).toHaveLength(1);
    const again = withoutTools(() => readKernelFile(file, { cache }));
    expect(again).toMatchObject({ kernel: { format: 'vmlinux', unpackedFrom: { protocol: 0x020f } } });
    // ... and loads its segments from the cached file, not from a copy in memory.
    expect(again.kind === 'linux' && again.kernel.format === 'vmlinux' && again.kernel.segments[0]!.data)
      .toEqual({ file: path.join(cache.dir, unpacked[0]!), offset: 0x200, length: 0x600 });
  });

  it('knows an unchanged file by its stamp without hashing it again, and a changed one as new, even with its old size and mtime', () => {
    const dir = tempDir();
    const file = path.join(dir, 'vmlinuz');
    const cache = new KernelCache(path.join(dir, 'cache'));
    const bzImageOf = (paddr: number) => makeBzImage({ payload: 0x2000, compressed: compressAsKbuild(makeVmlinux(paddr), 'gzip') });
    const sameTime = 1_700_000_000; // whole seconds: utimes sets them exactly, to the nanosecond
    writeFileSync(file, bzImageOf(0x1000000));
    utimesSync(file, sameTime, sameTime);
    expect(readKernelFile(file, { cache })).toMatchObject({ kernel: { format: 'vmlinux', entry: 0x1000000 } });
    const memos = readdirSync(cache.dir).filter((f) => f.startsWith('seen-'));
    expect(memos).toHaveLength(1);
    expect(readKernelFile(file, { cache })).toMatchObject({ kernel: { entry: 0x1000000 } });
    // Same size, same mtime, other content: only the ctime tells, and it must.
    const { ino, size } = statSync(file);
    writeFileSync(file, bzImageOf(0x2000000));
    utimesSync(file, sameTime, sameTime);
    expect(statSync(file)).toMatchObject({ ino, size, mtimeMs: sameTime * 1000 });
    expect(readKernelFile(file, { cache })).toMatchObject({ kernel: { format: 'vmlinux', entry: 0x2000000 } });
    expect(readdirSync(cache.dir).filter((f) => f.startsWith('vmlinux-'))).toHaveLength(2);
  });

  it('boots a bzImage it has unpacked before from its first bytes and the cache, without reading the rest', () => {
    // Bytes this thread has read(2) so far (Linux's rchar, /proc/thread-self/io).
    const readSoFar = () => Number(/^rchar: (\d+)$/m.exec(readFileSync('/proc/thread-self/io', 'latin1'))![1]);
    const { file, cache } = bzImageFile('gzip', { payload: 8 * MiB, setupSects: 6 });
    const first = readSoFar();
    readKernelFile(file, { cache });
    const firstBoot = readSoFar() - first;
    expect(firstBoot).toBeGreaterThan(8 * MiB);
    const again = readSoFar();
    const image = readKernelFile(file, { cache });
    expect(readSoFar() - again).toBeLessThan(MiB);
    // The same kernel and setup header as the first boot's, from the cached vmlinux.
    expect(image).toMatchObject({ kind: 'linux', kernel: { format: 'vmlinux', entry: 0x1000000, unpackedFrom: { setupSects: 6, protocol: 0x020f } } });
    expect(image.kind === 'linux' && image.kernel.format === 'vmlinux' && image.kernel.segments[0]!.data)
      .toMatchObject({ file: expect.stringContaining(cache.dir), offset: 0x200, length: 0x600 });
    // A file rewritten meanwhile (even to the same bytes) is a new stamp, read whole again.
    writeFileSync(file, readFileSync(file));
    const rewritten = readSoFar();
    readKernelFile(file, { cache });
    expect(readSoFar() - rewritten).toBeGreaterThan(8 * MiB);
  });

  it('unpacks afresh when the cached vmlinux is damaged, and replaces it', () => {
    const { file, cache } = bzImageFile('gzip');
    readKernelFile(file, { cache });
    const cached = path.join(cache.dir, readdirSync(cache.dir).find((f) => f.startsWith('vmlinux-'))!);
    const size = statSync(cached).size;
    writeFileSync(cached, new Uint8Array(size)); // same size, no longer an ELF file
    expect(readKernelFile(file, { cache })).toMatchObject({ kernel: { format: 'vmlinux', entry: 0x1000000 } });
    expect(readKernelFile(file, { cache })).toMatchObject({ kernel: { segments: [{ data: { file: cached } }] } });
  });

  it('leaves the kernel to its own decompressor when asked, or when no tool can unpack it (and says so)', () => {
    const { file, cache } = bzImageFile('xz');
    expect(readKernelFile(file, { cache, decompress: 'guest' })).toMatchObject({ kernel: { format: 'bzImage' } });
    const notices: string[] = [];
    const image = withoutTools(() => readKernelFile(file, { cache, onNotice: (m) => notices.push(m) }));
    expect(image).toMatchObject({ kernel: { format: 'bzImage' } });
    expect(notices).toEqual([`${file}: the guest decompresses this kernel (slower): xz is not installed (apt install xz-utils)`]);
  });

  it('refuses a damaged payload before any VM exists, naming the file', () => {
    const dir = tempDir();
    const file = path.join(dir, 'vmlinuz');
    const payload = compressAsKbuild(makeVmlinux(), 'xz');
    payload[40] ^= 0xff;
    writeFileSync(file, makeBzImage({ compressed: payload }));
    expect(() => readKernelFile(file, { cache: new KernelCache(path.join(dir, 'cache')) }))
      .toThrow(new RegExp(`^${file}: bzImage payload \\(xz\\) does not decompress`));
    // A payload that unpacks to something other than an ELF vmlinux is damaged too.
    writeFileSync(file, makeBzImage({ compressed: compressAsKbuild(new Uint8Array(4096), 'gzip') }));
    expect(() => readKernelFile(file, { cache: new KernelCache(path.join(dir, 'cache')) }))
      .toThrow(/payload unpacks to something that is not a vmlinux \(not an ELF64 file\): the file is damaged/);
  });
});

describe('a vmlinux read from its headers, its segments loaded from the file', () => {
  /** makeVmlinux() with its segment's 0x800 file bytes (from 0x200) set to a pattern. */
  function vmlinuxFile(): { file: string; bytes: Uint8Array } {
    const bytes = makeVmlinux();
    for (let i = 0; i < 0x800; i++) bytes[0x200 + i] = (i * 7 + 1) & 0xff;
    const file = path.join(tempDir(), 'vmlinux');
    writeFileSync(file, bytes);
    return { file, bytes };
  }

  it('plans the segment as a range of the file, and the loader reads it into guest RAM, marking it dirty', () => {
    const { file, bytes } = vmlinuxFile();
    const image = readKernelFile(file);
    if (image.kind !== 'linux' || image.kernel.format !== 'vmlinux') throw new Error(`not a vmlinux: ${image.kind}`);
    expect(image.kernel.segments).toEqual([{ paddr: 0x1000000, memSize: 0x10000, data: { file, offset: 0x200, length: 0x800 } }]);
    const memory = GuestMemory.create(256 * MiB);
    try {
      memory.setLogging(true);
      memory.write(gpa(0x1000000 + 0x800), Uint8Array.of(0xee)); // inside memsz: must be zeroed by the load
      loadLinux(image.kernel, memory, { cmdline: '', cpus: 1 });
      expect(Buffer.from(memory.read(gpa(0x1000000), 0x800)).equals(Buffer.from(bytes.subarray(0x200, 0xa00)))).toBe(true);
      expect(memory.read(gpa(0x1000000 + 0x800), 1)[0]).toBe(0);
      const region = memory.regions[0]!;
      expect(region.dirty.count()).toBeGreaterThanOrEqual(0x10000 / 4096); // invariant B: the kernel's pages are marked
    } finally {
      memory.dispose();
    }
  });

  it('into fresh RAM (ramIsZero) writes only the file bytes: the zeros up to p_memsz are the fresh pages, left untouched', () => {
    const { file, bytes } = vmlinuxFile();
    const image = readKernelFile(file);
    if (image.kind !== 'linux' || image.kernel.format !== 'vmlinux') throw new Error(`not a vmlinux: ${image.kind}`);
    const memory = GuestMemory.create(256 * MiB);
    try {
      memory.setLogging(true);
      loadLinux(image.kernel, memory, { cmdline: '', cpus: 1, ramIsZero: true });
      expect(Buffer.from(memory.read(gpa(0x1000000), 0x800)).equals(Buffer.from(bytes.subarray(0x200, 0xa00)))).toBe(true);
      expect(memory.read(gpa(0x1000800), 0x10000 - 0x800).every((b) => b === 0)).toBe(true);
      const { dirty, start } = memory.regions[0]!;
      const page = (addr: number) => (addr - start) / 4096;
      expect(dirty.dirtyAt(page(0x1000000))).toBe(true); // invariant B: what the loader wrote is marked
      for (let addr = 0x1001000; addr < 0x1010000; addr += 4096) expect(dirty.dirtyAt(page(addr)), addr.toString(16)).toBe(false);
      // Without the promise, the same load writes (and marks) the zeros.
      const used = GuestMemory.create(256 * MiB);
      try {
        used.setLogging(true);
        loadLinux(image.kernel, used, { cmdline: '', cpus: 1 });
        expect(used.regions[0]!.dirty.dirtyAt(page(0x100f000))).toBe(true);
      } finally {
        used.dispose();
      }
    } finally {
      memory.dispose();
    }
  });

  it('fails clearly when the file shrinks between reading its headers and loading it', () => {
    const { file } = vmlinuxFile();
    const image = readKernelFile(file);
    if (image.kind !== 'linux') throw new Error('not linux');
    truncateSync(file, 0x400);
    const memory = GuestMemory.create(256 * MiB);
    try {
      expect(() => loadLinux(image.kernel, memory, { cmdline: '', cpus: 1 })).toThrow(new RegExp(`${file} ended 1024 bytes in, while loading 2048 bytes from 512: was it changed`));
    } finally {
      memory.dispose();
    }
  });

  it('refuses a vmlinux whose segment lies past its end, naming the file', () => {
    const { file, bytes } = vmlinuxFile();
    writeFileSync(file, bytes.subarray(0, 0x600));
    expect(() => readKernelFile(file)).toThrow(new RegExp(`^${file}: ELF segment 0 lies outside the file`));
  });
});

describe('an initrd, left in its file until it is loaded', () => {
  it('is checked now and read straight into guest RAM at the address boot_params gives', () => {
    const dir = tempDir();
    const initrdFile = path.join(dir, 'initrd');
    const initrd = Uint8Array.from({ length: 3 * 4096 + 5 }, (_, i) => (i * 13) & 0xff);
    writeFileSync(initrdFile, initrd);
    const range = bootFileRange('initrd', initrdFile);
    expect(range).toEqual({ file: initrdFile, offset: 0, length: initrd.length });
    const vmlinux = path.join(dir, 'vmlinux');
    writeFileSync(vmlinux, makeVmlinux());
    const image = readKernelFile(vmlinux);
    if (image.kind !== 'linux') throw new Error('not linux');
    const memory = GuestMemory.create(256 * MiB);
    try {
      const entry = loadLinux(image.kernel, memory, { cmdline: '', cpus: 1, initrd: range });
      expect(entry.initrd?.sizeBytes).toBe(initrd.length);
      expect(Buffer.from(memory.read(entry.initrd!.addr, initrd.length)).equals(Buffer.from(initrd))).toBe(true);
    } finally {
      memory.dispose();
    }
  });

  it('that is missing, a directory or not a regular file is refused, naming it', () => {
    const dir = tempDir();
    expect(() => bootFileRange('initrd', path.join(dir, 'nope'))).toThrow(/^initrd file .*nope does not exist$/);
    expect(() => bootFileRange('initrd', dir)).toThrow(/^initrd file .* is a directory$/);
    expect(() => bootFileRange('initrd', '/dev/null')).toThrow(/^initrd file \/dev\/null is not a regular file$/);
  });
});
