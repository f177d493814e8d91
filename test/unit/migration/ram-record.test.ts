// RAM records: encoded from guest memory, applied to it whole or landed in pieces as they are read.
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { MigrationStreamError, RecordType, record } from '../../../src/migration/protocol.js';
import { pageRanges } from '../../../src/memory/dirty-bitmap.js';
import { GuestMemory } from '../../../src/memory/guest-memory.js';
import { RAM_RECORD_SPLIT, RamRecordLanding, applyRamRecord, encodeRamRecord } from '../../../src/migration/ram-record.js';
import { RecordReader } from '../../../src/migration/record-reader.js';

describe('RAM records', () => {
  it('runs known to be zero are sent as zero runs without being read (never allocating them)', async () => {
    const src = GuestMemory.create(1024 * 1024);
    const dst = GuestMemory.create(1024 * 1024);
    try {
      src.fill(0x3000 as never, 4096, 9);
      const counts = { zero: 0, data: 0 };
      const rec = encodeRamRecord(0, src.regions[0]!.bytes, [3], counts, [{ firstPage: 0, count: 3 }, { firstPage: 4, count: 1 }]);
      expect(counts).toEqual({ zero: 4, data: 1 });
      expect(rec.length).toBe(5 + 12 + 2 * 9 + 5 + 4096); // each zero run in 9 bytes
      expect(src.allocatedPages(0)).toEqual([{ firstPage: 3, count: 1 }]); // pages 0-2 and 4 were not read
      dst.fill(0x1000 as never, 4096, 5); // stale data the zero page must replace
      applyRamRecord(dst, rec.subarray(5));
      expect(dst.allocatedPages(0)).toEqual([{ firstPage: 3, count: 1 }]); // the stale page was released, not written
      // (Reading compares, and allocates what it reads: last.)
      expect(Buffer.from(dst.regions[0]!.bytes.subarray(0, 5 * 4096)).equals(Buffer.from(src.regions[0]!.bytes.subarray(0, 5 * 4096)))).toBe(true);
    } finally {
      src.dispose();
      dst.dispose();
    }
  });

  it('data pages land byte for byte whatever their order and mix with zero pages; a bad entry inside a run of data is refused', async () => {
    const src = GuestMemory.create(1024 * 1024); // 256 pages
    const dst = GuestMemory.create(1024 * 1024);
    try {
      const pages = [5, 6, 7, 9, 8, 100, 101, 255, 0, 1];
      for (const p of pages) if (p !== 7 && p !== 101) src.write((p * 4096) as never, randomBytes(4096)); // 7 and 101 stay zero
      const rec = encodeRamRecord(0, src.regions[0]!.bytes, pages, { zero: 0, data: 0 });
      applyRamRecord(dst, rec.subarray(5));
      expect(Buffer.from(dst.regions[0]!.bytes).equals(Buffer.from(src.regions[0]!.bytes))).toBe(true);
      // The third of a run of three data entries names a page past the region: refused, not written past it.
      const bad = Buffer.from(encodeRamRecord(0, src.regions[0]!.bytes, [5, 6, 8], { zero: 0, data: 0 }));
      bad.writeUInt32LE(256, 5 + 12 + 2 * 5);
      expect(() => applyRamRecord(dst, bad.subarray(5))).toThrow(/names page 256 beyond region 0/);
      // Cut short inside the second page's data.
      const cut = encodeRamRecord(0, src.regions[0]!.bytes, [5, 6], { zero: 0, data: 0 }).subarray(5, 5 + 12 + 10 + 4096 + 100);
      expect(() => applyRamRecord(dst, cut)).toThrow(/shorter than its pages/);
      // A data page count that is not what the entries name, either way.
      for (const says of [1, 3]) {
        const wrong = Buffer.from(encodeRamRecord(0, src.regions[0]!.bytes, [5, 6], { zero: 0, data: 0 }));
        wrong.writeUInt32LE(says, 5 + 8);
        expect(() => applyRamRecord(dst, wrong.subarray(5)), `says ${says}`).toThrow(MigrationStreamError);
      }
    } finally {
      src.dispose();
      dst.dispose();
    }
  });

  it('a zero run past the end of the region, or of no pages, is refused before any page is touched', async () => {
    const mem = GuestMemory.create(1024 * 1024); // 256 pages
    try {
      for (const run of [{ firstPage: 200, count: 57 }, { firstPage: 3, count: 0 }]) {
        const rec = encodeRamRecord(0, mem.regions[0]!.bytes, [], { zero: 0, data: 0 }, [run]);
        expect(() => applyRamRecord(mem, rec.subarray(5))).toThrow(MigrationStreamError);
      }
      const whole = encodeRamRecord(0, mem.regions[0]!.bytes, [], { zero: 0, data: 0 }, [{ firstPage: 0, count: 256 }]);
      expect(() => applyRamRecord(mem, whole.subarray(5))).not.toThrow();
    } finally {
      mem.dispose();
    }
  });
});

describe('RAM records read in pieces (RecordReader with RAM_RECORD_SPLIT, RamRecordLanding)', () => {
  /** A stream of RAM records for `src`'s pages in `batches`, between two PASS_END records. */
  const streamOf = async (src: GuestMemory, batches: number[][]) => {
    const pass = (n: number) => record(RecordType.PASS_END, Buffer.from([n, 0, 0, 0]));
    return Buffer.concat([pass(1), ...batches.map((b) => Buffer.from(encodeRamRecord(0, src.regions[0]!.bytes, b, { zero: 0, data: 0 }))), pass(2)]);
  };

  it('a reader hands out everything before the data, then the data in pieces, however TCP splits the stream; the pages land byte for byte', async () => {
    const src = GuestMemory.create(1024 * 1024);
    try {
      const batches = [[5, 6, 7, 9, 8, 100, 101, 255, 0, 1], [40, 41, 42], [7]];
      for (const p of batches.flat()) if (p !== 7 && p !== 101) src.write((p * 4096) as never, randomBytes(4096)); // 7 and 101 stay zero
      const stream = await streamOf(src, batches);
      for (const piece of [1, 4095, 4097, 70_000, stream.length]) {
        const dst = GuestMemory.create(1024 * 1024);
        try {
          const reader = new RecordReader(RAM_RECORD_SPLIT);
          const types: number[] = [];
          let landing: InstanceType<typeof RamRecordLanding> | undefined;
          for (let at = 0; at < stream.length; at += piece) {
            reader.push(stream.subarray(at, at + piece));
            for (;;) {
              if (landing !== undefined) {
                for (let b = reader.takeBody(); b !== undefined; b = reader.takeBody()) landing.write(b);
                if (landing.dataLeft > 0) break;
                landing = undefined;
              }
              const r = reader.next();
              if (r === undefined) break;
              types.push(r.type);
              if (r.type === RecordType.RAM) landing = new RamRecordLanding(dst, r.payload, r.body);
              else expect(r.body).toBe(0);
            }
          }
          expect(types, `pieces of ${piece}`).toEqual([RecordType.PASS_END, RecordType.RAM, RecordType.RAM, RecordType.RAM, RecordType.PASS_END]);
          expect(Buffer.from(dst.regions[0]!.bytes).equals(Buffer.from(src.regions[0]!.bytes)), `pieces of ${piece}`).toBe(true);
        } finally {
          dst.dispose();
        }
      }
    } finally {
      src.dispose();
    }
  });

  it('a reader refuses to go on while a body is untaken, and refuses a RAM record whose data would not fit in it', async () => {
    const src = GuestMemory.create(1024 * 1024);
    try {
      src.fill((3 * 4096) as never, 8192, 1);
      const rec = Buffer.from(encodeRamRecord(0, src.regions[0]!.bytes, [3, 4], { zero: 0, data: 0 }));
      const reader = new RecordReader(RAM_RECORD_SPLIT);
      reader.push(rec.subarray(0, 5 + 12 + 10 + 100));
      expect(reader.next()?.body).toBe(2 * 4096);
      expect(reader.takeBody()?.length).toBe(100);
      expect(reader.bodyLeft).toBe(2 * 4096 - 100);
      expect(() => reader.next()).toThrow(/body not taken/);
      expect(() => reader.skipBody(2 * 4096)).toThrow(/skipBody/); // more than is left
      reader.skipBody(2 * 4096 - 100); // as if read elsewhere
      expect(reader.next()).toBeUndefined();
      // Says 3000 data pages (12 MB) in a record of 8 KiB: refused as soon as its count is read.
      rec.writeUInt32LE(3000, 5 + 8);
      const other = new RecordReader(RAM_RECORD_SPLIT);
      other.push(rec.subarray(0, 5 + 12));
      expect(() => other.next()).toThrow(MigrationStreamError);
    } finally {
      src.dispose();
    }
  });

  it('a landing told RAM is zero unless marked clears only marked pages for zero entries: a page written unmarked keeps its bytes', async () => {
    const src = GuestMemory.create(1024 * 1024);
    const dst = GuestMemory.create(1024 * 1024, {}, { preallocate: true });
    try {
      dst.setLogging(true);
      dst.write((20 * 4096) as never, Uint8Array.of(7)); // marked, as a loader's write is
      dst.setLogging(false);
      dst.write((30 * 4096) as never, Uint8Array.of(8)); // unmarked: breaks what zeroUnlessMarked relies on
      dst.setLogging(true);
      src.write((40 * 4096) as never, Uint8Array.of(9));
      // Pages 0-39 and 41-255 as zero (a run for 0-15, single zero entries after), 40 as data.
      const rec = Buffer.from(encodeRamRecord(0, src.regions[0]!.bytes, Array.from({ length: 240 }, (_, i) => i + 16), { zero: 0, data: 0 }, [{ firstPage: 0, count: 16 }]));
      const reader = new RecordReader(RAM_RECORD_SPLIT);
      reader.push(rec);
      const r = reader.next()!;
      const landing = new RamRecordLanding(dst, r.payload, r.body, true);
      landing.write(rec.subarray(rec.length - 4096));
      expect(dst.read((20 * 4096) as never, 1)).toEqual(Uint8Array.of(0));
      expect(dst.read((40 * 4096) as never, 1)).toEqual(Uint8Array.of(9));
      // The unmarked page was not cleared: the source's RAM and this one differ there. Every VMM write
      // of an incoming VM is marked (Vm.ramZeroUnlessMarked), so this cannot happen outside a test.
      expect(dst.read((30 * 4096) as never, 1)).toEqual(Uint8Array.of(8));
      new RamRecordLanding(dst, r.payload, r.body, false).write(rec.subarray(rec.length - 4096));
      expect(Buffer.from(dst.regions[0]!.bytes).equals(Buffer.from(src.regions[0]!.bytes))).toBe(true);
    } finally {
      src.dispose();
      dst.dispose();
    }
  });

  it('data read into the windows a landing lends, in partial reads, lands byte for byte and marks its pages (invariant B)', async () => {
    const src = GuestMemory.create(1024 * 1024);
    const dst = GuestMemory.create(1024 * 1024);
    try {
      const pages = [10, 11, 12, 13, 50, 51, 200];
      for (const p of pages) src.write((p * 4096) as never, randomBytes(4096));
      const rec = Buffer.from(encodeRamRecord(0, src.regions[0]!.bytes, pages, { zero: 0, data: 0 }));
      const reader = new RecordReader(RAM_RECORD_SPLIT);
      reader.push(rec.subarray(0, rec.length - pages.length * 4096));
      const r = reader.next()!;
      dst.setLogging(true);
      const landing = new RamRecordLanding(dst, r.payload, r.body);
      const data = rec.subarray(rec.length - pages.length * 4096);
      const runs: number[] = [];
      for (let at = 0, read = 1000; landing.dataLeft > 0; read += 3001) {
        runs.push(landing.runLeft);
        const window = landing.window(); // the rest of the run: the run of 4 pages, then of 2, then 1
        const n = Math.min(read, window.length);
        window.set(data.subarray(at, at + n)); // the socket's read
        landing.landed(n);
        at += n;
      }
      expect(runs[0]).toBe(4 * 4096);
      expect(Buffer.from(dst.regions[0]!.bytes).equals(Buffer.from(src.regions[0]!.bytes))).toBe(true);
      expect(pageRanges(dst.regions[0]!.dirty.getAndReset().bitmap, 256)).toEqual([
        { firstPage: 10, count: 4 }, { firstPage: 50, count: 2 }, { firstPage: 200, count: 1 },
      ]);
      expect(() => landing.window()).toThrow(/no data left/);
    } finally {
      src.dispose();
      dst.dispose();
    }
  });
});
