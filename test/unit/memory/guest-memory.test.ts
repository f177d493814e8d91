import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { gpa, MiB } from '../../../src/arch/x86/layout.js';
import { pageRanges } from '../../../src/memory/dirty-bitmap.js';
import { GuestMemory, GuestMemoryError, POPULATE_MIN_BYTES, ramLayout } from '../../../src/memory/guest-memory.js';

// GuestMemory needs the addon's mmap and madvise, not KVM.
describe('GuestMemory', () => {
  let mem: GuestMemory | undefined;
  afterEach(() => { mem?.dispose(); mem = undefined; });

  it('reads back what it wrote and refuses ranges outside RAM', () => {
    mem = GuestMemory.create(4 * MiB);
    mem.write(gpa(0x1234), Uint8Array.of(1, 2, 3));
    expect(mem.read(gpa(0x1234), 3)).toEqual(Uint8Array.of(1, 2, 3));
    expect(() => mem!.write(gpa(4 * MiB - 1), Uint8Array.of(1, 2))).toThrow(GuestMemoryError);
    expect(() => mem!.read(gpa(8 * MiB), 1)).toThrow(/not inside guest RAM/);
  });

  it('a large write (its pages populated first) lands in the mapping, at an unaligned address, and is marked', () => {
    mem = GuestMemory.create(8 * MiB);
    const region = mem.regions[0]!;
    const data = new Uint8Array(POPULATE_MIN_BYTES + 4097).map((_, i) => (i * 7 + 3) & 0xff);
    mem.write(gpa(3 * MiB + 5), Uint8Array.of(9)); // a page already mapped and written
    mem.setLogging(true);
    mem.write(gpa(3 * MiB + 1), data);
    expect(mem.read(gpa(3 * MiB + 1), data.length)).toEqual(data);
    expect(region.bytes[3 * MiB]).toBe(0);
    expect(region.bytes[3 * MiB + 1 + data.length]).toBe(0);
    const firstPage = (3 * MiB) / 4096;
    expect(pageRanges(region.dirty.getAndReset().bitmap, region.dirty.pageCount)).toEqual([
      { firstPage, count: Math.ceil((data.length + 1) / 4096) },
    ]);
    expect(() => mem!.write(gpa(8 * MiB - POPULATE_MIN_BYTES + 1), new Uint8Array(POPULATE_MIN_BYTES))).toThrow(/not inside guest RAM/);
  });

  it('INVARIANT B: marks the pages of every VMM write while logging, and only then', () => {
    mem = GuestMemory.create(4 * MiB);
    const region = mem.regions[0]!;
    mem.write(gpa(0x5000), Uint8Array.of(1));
    expect(region.dirty.count()).toBe(0); // logging off
    mem.setLogging(true);
    mem.write(gpa(0x5ff0), new Uint8Array(0x20)); // pages 5 and 6
    mem.fill(gpa(0x10_0000), 3 * 4096, 0xaa); // pages 256..258
    expect(pageRanges(region.dirty.getAndReset().bitmap, region.dirty.pageCount)).toEqual([
      { firstPage: 5, count: 2 }, { firstPage: 256, count: 3 },
    ]);
  });

  it('with invariant B switched off (test-only), VMM writes go unmarked', () => {
    mem = GuestMemory.create(4 * MiB, { testOnlySkipVmmDirtyMarking: true });
    mem.setLogging(true);
    mem.write(gpa(0x5000), Uint8Array.of(1));
    mem.lendForWrite(gpa(0x8000), 4096).landed(0, 4096);
    expect(mem.regions[0]!.dirty.count()).toBe(0);
  });

  it('INVARIANT B for a lent write: lendForWrite marks what the writer reports as landed, each part when reported, and nothing else', () => {
    mem = GuestMemory.create(4 * MiB);
    const region = mem.regions[0]!;
    mem.setLogging(true);
    const lease = mem.lendForWrite(gpa(0x10_0000), 8 * 4096); // pages 256..263
    expect(lease.view.length).toBe(8 * 4096);
    lease.view.fill(7, 0, 4096 + 1); // the writer (a socket read) puts bytes there...
    expect(region.dirty.count()).toBe(0); // ...unmarked until reported
    lease.landed(0, 4096 + 1);
    lease.view.fill(9, 5 * 4096, 6 * 4096);
    lease.landed(5 * 4096, 4096);
    expect(mem.read(gpa(0x10_0000 + 4096), 2)).toEqual(Uint8Array.of(7, 0));
    expect(pageRanges(region.dirty.getAndReset().bitmap, region.dirty.pageCount)).toEqual([
      { firstPage: 256, count: 2 }, { firstPage: 261, count: 1 },
    ]);
    expect(() => mem!.lendForWrite(gpa(4 * MiB - 4096), 8192)).toThrow(/not inside guest RAM/);
  });

  it('INVARIANT B across threads: a mapping attach()ed elsewhere writes the same RAM and marks the same bitmap, under the same logging switch', () => {
    mem = GuestMemory.create(4 * MiB);
    const other = GuestMemory.attach(structuredClone(mem.shared()));
    try {
      other.writeU32(gpa(0x3000), 0xdeadbeef);
      expect(mem.readU32(gpa(0x3000))).toBe(0xdeadbeef);
      expect(mem.regions[0]!.dirty.count()).toBe(0); // logging off, on both sides
      mem.setLogging(true);
      expect(other.isLogging).toBe(true);
      other.write(gpa(0x7ffe), Uint8Array.of(1, 2, 3)); // pages 7 and 8
      expect(mem.read(gpa(0x7ffe), 3)).toEqual(Uint8Array.of(1, 2, 3));
      expect(pageRanges(mem.regions[0]!.dirty.getAndReset().bitmap, mem.regions[0]!.dirty.pageCount)).toEqual([{ firstPage: 7, count: 2 }]);
    } finally {
      other.detach();
    }
    expect(mem.readU32(gpa(0x3000))).toBe(0xdeadbeef); // detach leaves the owner's mapping alone
  });

  it('scalar accessors are little-endian and refuse a field that straddles the end of RAM', () => {
    mem = GuestMemory.create(4 * MiB);
    mem.writeU16(gpa(0x100), 0x1234);
    mem.writeU32(gpa(0x104), 0x89abcdef);
    expect(mem.read(gpa(0x100), 8)).toEqual(Uint8Array.of(0x34, 0x12, 0, 0, 0xef, 0xcd, 0xab, 0x89));
    expect(mem.readU64(gpa(0x100))).toBe(0x89abcdef_00001234n);
    expect(() => mem!.readU32(gpa(4 * MiB - 2))).toThrow(/not inside guest RAM/);
    expect(() => mem!.writeU16(gpa(4 * MiB - 1), 1)).toThrow(GuestMemoryError);
    const into = new Uint8Array(3);
    mem.readInto(gpa(0x104), into);
    expect(into).toEqual(Uint8Array.of(0xef, 0xcd, 0xab));
  });

  it('lays RAM out below 3 GiB and from 4 GiB, in regions of at most 2 GiB', () => {
    expect(ramLayout(256 * MiB)).toEqual([{ start: 0, sizeBytes: 256 * MiB }]);
    expect(ramLayout(5 * 1024 * MiB).map((r) => [r.start / MiB, r.sizeBytes / MiB])).toEqual([
      [0, 2048], [2048, 1024], [4096, 2048],
    ]);
    expect(() => GuestMemory.create(4097)).toThrow(/multiple of 4 KiB/);
  });
});

describe('GuestMemory: never-written pages', () => {
  const HUGE_PAGES = 512; // a 2 MiB transparent huge page, in 4 KiB pages
  const covers = (ranges: { firstPage: number; count: number }[], page: number) => ranges.some((r) => page >= r.firstPage && page < r.firstPage + r.count);

  it('regions start on 2 MiB boundaries (THP, and KVM\'s large mappings, need gpa and hva aligned alike)', () => {
    const m = GuestMemory.create(6 * MiB);
    try {
      expect(m.regions[0]!.hva % BigInt(2 * MiB)).toBe(0n);
    } finally {
      m.dispose();
    }
  });

  it('asks for transparent huge pages, or for none (hugePages: false), per mapping', () => {
    // smaps' THPeligible says whether the kernel may back a mapping with huge pages.
    const eligible = (m: GuestMemory) => {
      const start = m.regions[0]!.hva.toString(16);
      const block = readFileSync('/proc/self/smaps', 'utf8').split(/\n(?=[0-9a-f]+-[0-9a-f]+ )/).find((b) => b.startsWith(`${start}-`));
      return block?.match(/^THPeligible:\s+(\d)/m)?.[1];
    };
    const thp = readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8');
    const on = GuestMemory.create(4 * MiB);
    const off = GuestMemory.create(4 * MiB, {}, { hugePages: false });
    try {
      expect(eligible(off)).toBe('0');
      expect(eligible(on)).toBeDefined(); // the mapping was found: the '0' above means something
      if (!thp.includes('[never]')) expect(eligible(on)).toBe('1');
      expect(on.hugePages).toBe(!thp.includes('[never]')); // and populate() then leaves faults to the copy
      expect(off.hugePages).toBe(false);
      expect(GuestMemory.attach(on.shared()).hugePages).toBe(on.hugePages);
    } finally {
      on.dispose();
      off.dispose();
    }
  });

  // With transparent huge pages a write maps its whole 2 MiB, so "allocated" is exact per 2 MiB
  // granule, not per page: the contract is that no written page is left out and no untouched
  // granule is listed.
  it('allocatedPages lists every written page and no untouched 2 MiB; zeroPages releases pages, reads zero, and marks them', () => {
    const m = GuestMemory.create(8 * MiB);
    try {
      expect(m.allocatedPages(0)).toEqual([]);
      m.write(gpa(5 * 4096), new Uint8Array([1]));
      m.fill(gpa(1100 * 4096), 3 * 4096, 7);
      const listed = m.allocatedPages(0);
      for (const page of [5, 1100, 1101, 1102]) expect(covers(listed, page)).toBe(true);
      for (const page of [HUGE_PAGES, HUGE_PAGES * 3 + 7]) expect(covers(listed, page)).toBe(false); // granules 1 and 3
      expect(m.read(gpa(HUGE_PAGES * 4096), 4096).every((b) => b === 0)).toBe(true);
      m.setLogging(true);
      m.zeroPages(gpa(1101 * 4096), 4096);
      const after = m.allocatedPages(0);
      expect(covers(after, 1101)).toBe(false);
      for (const page of [5, 1100, 1102]) expect(covers(after, page)).toBe(true);
      expect(m.read(gpa(1100 * 4096), 3 * 4096)).toEqual(new Uint8Array(3 * 4096).fill(7, 0, 4096).fill(7, 8192));
      expect(m.regions[0]!.dirty.dirtyAt(1101)).toBe(true);
      expect(() => m.zeroPages(gpa(4096 + 1), 4096)).toThrow(/not whole pages/);
      expect(() => m.zeroPages(gpa(8 * MiB), 4096)).toThrow(/not inside guest RAM/);
    } finally {
      m.dispose();
    }
  });

  it('preallocate maps every page at start, still zero and not marked; without it none is mapped', () => {
    const size = 8 * MiB;
    const plain = GuestMemory.create(size);
    const taken = GuestMemory.create(size, {}, { preallocate: true });
    const small = GuestMemory.create(size, {}, { hugePages: false, preallocate: true });
    try {
      expect(plain.allocatedPages(0)).toEqual([]);
      for (const m of [taken, small]) {
        expect(m.allocatedPages(0)).toEqual([{ firstPage: 0, count: size / 4096 }]);
        expect(m.regions[0]!.bytes.every((b) => b === 0)).toBe(true);
        expect(m.regions[0]!.dirty.getAndReset().bitmap.every((w) => w === 0)).toBe(true);
      }
    } finally {
      plain.dispose();
      taken.dispose();
      small.dispose();
    }
  });

  it('preallocated RAM keeps the pages zeroPages clears, here and in an attach()ed view: zero, marked, still mapped', () => {
    const size = 8 * MiB;
    const m = GuestMemory.create(size, {}, { preallocate: true });
    try {
      m.write(gpa(7 * 4096), Uint8Array.of(1, 2, 3));
      m.write(gpa(900 * 4096 + 4095), Uint8Array.of(9));
      m.setLogging(true);
      m.zeroPages(gpa(0), 1024 * 4096);
      // Before any read: a read maps a released page again (the shared zero page), which pagemap counts.
      expect(m.allocatedPages(0)).toEqual([{ firstPage: 0, count: size / 4096 }]);
      expect(m.read(gpa(0), 1024 * 4096).every((b) => b === 0)).toBe(true);
      expect(m.regions[0]!.dirty.dirtyAt(7)).toBe(true);
      expect(m.regions[0]!.dirty.dirtyAt(1023)).toBe(true);
      const view = GuestMemory.attach(m.shared());
      view.write(gpa(2000 * 4096), Uint8Array.of(5));
      view.zeroPages(gpa(2000 * 4096), 4096);
      view.detach();
      expect(m.allocatedPages(0)).toEqual([{ firstPage: 0, count: size / 4096 }]);
      expect(m.read(gpa(2000 * 4096), 1)).toEqual(Uint8Array.of(0));
    } finally {
      m.dispose();
    }
  });

  it('zeroMarkedPages clears the marked pages of a range, preallocated or not, and leaves an unmarked one as it is', () => {
    for (const preallocate of [false, true]) {
      const m = GuestMemory.create(4 * MiB, {}, { preallocate });
      try {
        m.setLogging(true);
        m.write(gpa(3 * 4096), Uint8Array.of(1));
        m.write(gpa(700 * 4096 + 100), Uint8Array.of(2, 3));
        // A write the marks do not know of (logging off): what zeroMarkedPages relies on not happening.
        m.setLogging(false);
        m.write(gpa(500 * 4096), Uint8Array.of(4));
        m.setLogging(true);
        m.zeroMarkedPages(gpa(0), 1024 * 4096);
        expect(m.read(gpa(3 * 4096), 1)).toEqual(Uint8Array.of(0));
        expect(m.read(gpa(700 * 4096 + 100), 2)).toEqual(Uint8Array.of(0, 0));
        expect(m.read(gpa(500 * 4096), 1)).toEqual(Uint8Array.of(4));
        expect(() => m.zeroMarkedPages(gpa(100), 4096)).toThrow(/not whole pages/);
        expect(() => m.zeroMarkedPages(gpa(1023 * 4096), 2 * 4096)).toThrow(GuestMemoryError);
      } finally {
        m.dispose();
      }
    }
  });

  it('knownZeroChunks: the chunks with no page mapped, and only those; marks count for nothing', () => {
    const chunk = 2 * MiB;
    const plain = GuestMemory.create(8 * MiB);
    const taken = GuestMemory.create(8 * MiB, {}, { preallocate: true });
    try {
      plain.write(gpa(2 * MiB + 4096), Uint8Array.of(1));
      expect([...plain.knownZeroChunks(chunk)[0]!]).toEqual([1, 0, 1, 1]);
      taken.setLogging(true);
      taken.write(gpa(4 * MiB), Uint8Array.of(1)); // marked
      expect([...taken.knownZeroChunks(chunk)[0]!]).toEqual([0, 0, 0, 0]); // every page is mapped
    } finally {
      plain.dispose();
      taken.dispose();
    }
  });

  it('an attach()ed view neither disposes nor unmaps; the owner neither detaches', () => {
    const m = GuestMemory.create(4 * MiB);
    const other = GuestMemory.attach(m.shared());
    try {
      expect(other.regions[0]!.hva).toBe(m.regions[0]!.hva);
      expect(() => other.dispose()).toThrow(/views another thread's mappings; detach\(\) it/);
      expect(() => m.detach()).toThrow(/owns its mappings; dispose\(\) it/);
      other.write(gpa(0x2000), Uint8Array.of(42));
      other.detach();
      expect(m.read(gpa(0x2000), 1)).toEqual(Uint8Array.of(42));
    } finally {
      m.dispose();
    }
  });
});
