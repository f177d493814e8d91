import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  MAX_RECORD_BYTES, MigrationStreamError, RecordReader, RecordType, STREAM_START_BYTES, checkStreamStart,
  VERIFY_CHUNK_BYTES, hashRegions, headerRecord, parseHeader, parseState, record, shapeMismatch, stateRecord, stateRecordTemplate, verifyMismatches,
  type MachineShape,
} from '../../../src/migration/protocol.js';

const SHAPE: MachineShape = {
  memBytes: 256 * 1024 * 1024, cpus: 1, regions: [{ start: 0, sizeBytes: 256 * 1024 * 1024 }], devices: ['uart8250@0x3f8'],
};

describe('migration stream records', () => {
  it('round-trip through the reader however TCP splits them', () => {
    const stream = Buffer.concat([headerRecord(SHAPE), record(RecordType.PASS_END, Buffer.from([1, 0, 0, 0])), stateRecord('uart', { ier: 3, bytes: new Uint8Array([1, 2, 255]) })]);
    for (const piece of [1, 3, 7, stream.length]) {
      const reader = new RecordReader();
      const got: { type: number; payload: Buffer }[] = [];
      for (let at = 0; at < stream.length; at += piece) {
        reader.push(stream.subarray(at, at + piece));
        // A record's bytes are valid until the next next() (the reader reuses its assembly buffer): copy.
        for (let r = reader.next(); r !== undefined; r = reader.next()) got.push({ type: r.type, payload: Buffer.from(r.payload) });
      }
      expect(got.map((r) => r.type)).toEqual([RecordType.HEADER, RecordType.PASS_END, RecordType.STATE]);
      expect(parseHeader(got[0]!.payload)).toEqual(SHAPE);
      expect(parseState(got[2]!.payload)).toEqual({ name: 'uart', state: { ier: 3, bytes: new Uint8Array([1, 2, 255]) } });
    }
  });

  it('reads records in place from a transient chunk and keeps what is unread once told to retain it', () => {
    const stream = Buffer.concat([record(RecordType.PASS_END, Buffer.from([1, 0, 0, 0])), record(RecordType.VERIFY, Buffer.from('abcdefgh'))]);
    const readBuffer = Buffer.from(stream); // the owner's read buffer, reused after each read
    const reader = new RecordReader();
    reader.push(readBuffer.subarray(0, 13), true); // the first record and part of the second
    expect(reader.next()?.payload).toEqual(Buffer.from([1, 0, 0, 0]));
    expect(reader.next()).toBeUndefined();
    reader.retain();
    readBuffer.fill(0xee); // the next read overwrites it
    reader.push(stream.subarray(13));
    expect(reader.next()?.payload.toString()).toBe('abcdefgh');
  });

  it('without retain(), a reused read buffer corrupts a record that spans reads (so the test above means something)', () => {
    const stream = record(RecordType.VERIFY, Buffer.from('abcdefgh'));
    const readBuffer = Buffer.from(stream);
    const reader = new RecordReader();
    reader.push(readBuffer.subarray(0, 8), true);
    expect(reader.next()).toBeUndefined();
    readBuffer.fill(0xee, 5); // the payload's first bytes
    reader.push(stream.subarray(8));
    expect(reader.next()?.payload.toString()).not.toBe('abcdefgh');
  });

  it('STATE carries byte arrays raw, wherever they sit in the state, and copies them out of the record', () => {
    const state = {
      version: 1, irqchips: [new Uint8Array([1, 2]), new Uint8Array(0), new Uint8Array(520).fill(7)],
      nested: { ok: true, name: 'x', list: [1, 2, { b: new Uint8Array([9]) }] }, nothing: null,
    };
    const rec = stateRecord('vm', state);
    expect(rec.length).toBeLessThan(5 + 2 + 2 + 4 + 200 + 4 + 5 * 4 + 523); // raw, not base64
    const payload = Buffer.from(rec.subarray(5));
    const parsed = parseState(payload);
    payload.fill(0); // the record's bytes are reused after parsing: the arrays must not be views of them
    expect(parsed).toEqual({ name: 'vm', state });
  });

  it('a STATE record template is the record of whatever its state arrays hold, written in place', () => {
    const sample = { version: 1, irqchips: [new Uint8Array(3), new Uint8Array(520)], pit: new Uint8Array(112), nested: { clock: new Uint8Array(48) } };
    const template = stateRecordTemplate('vm', sample);
    expect(template.state).not.toBe(sample);
    expect(template.state.version).toBe(1);
    template.state.irqchips[0]!.set([4, 5, 6]);
    template.state.irqchips[1]!.fill(9);
    template.state.pit.fill(0xaa);
    template.state.nested.clock[47] = 1;
    const fresh = { version: 1, irqchips: [new Uint8Array([4, 5, 6]), new Uint8Array(520).fill(9)], pit: new Uint8Array(112).fill(0xaa), nested: { clock: new Uint8Array(48) } };
    fresh.nested.clock[47] = 1;
    expect(template.record).toEqual(stateRecord('vm', fresh));
    expect(parseState(template.record.subarray(5))).toEqual({ name: 'vm', state: fresh });
    expect(sample.pit.every((b) => b === 0)).toBe(true); // the sample itself is left alone
  });

  it('STATE records that are cut short, padded, not JSON or name an array they lack are refused', () => {
    const payload = stateRecord('vcpu0', { regs: new Uint8Array(144).fill(1) }).subarray(5);
    for (const cut of [1, 7, 20, payload.length - 1]) expect(() => parseState(payload.subarray(0, cut)), `cut at ${cut}`).toThrow(MigrationStreamError);
    expect(() => parseState(Buffer.concat([payload, Buffer.from([0])]))).toThrow(/longer than its contents/);
    const notJson = stateRecord('x', { a: 1 }).subarray(5);
    notJson[2 + 1 + 4] = 0x7b + 1; // the JSON's '{' becomes '|'
    expect(() => parseState(notJson)).toThrow(/is not valid JSON/);
    const lacking = stateRecord('x', { a: { $bytes: 3 } }).subarray(5);
    expect(() => parseState(lacking)).toThrow(/names byte array 3, which it does not carry/);
  });

  it('refuses a record longer than any valid one before buffering it', () => {
    const reader = new RecordReader();
    const head = Buffer.alloc(5);
    head.writeUInt8(RecordType.RAM, 0);
    head.writeUInt32LE(MAX_RECORD_BYTES + 1, 1);
    reader.push(head);
    expect(() => reader.next()).toThrow(/larger than any valid record/);
  });

  it('tells a stranger from a tsvmm stream by its first bytes', () => {
    expect(() => checkStreamStart(headerRecord(SHAPE).subarray(0, STREAM_START_BYTES))).not.toThrow();
    expect(() => checkStreamStart(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n'))).toThrow(MigrationStreamError);
    expect(() => checkStreamStart(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n'))).toThrow(/not a tsvmm migration stream \(bad magic\)/);
    const wrongType = Buffer.from(headerRecord(SHAPE));
    wrongType[0] = RecordType.RAM;
    expect(() => checkStreamStart(wrongType)).toThrow(/bad magic/);
    for (let i = 0; i < 50; i++) expect(() => checkStreamStart(randomBytes(STREAM_START_BYTES))).toThrow(/bad magic/);
  });

  it('names what a destination must change on a shape mismatch', () => {
    expect(shapeMismatch(SHAPE, SHAPE)).toEqual([]);
    expect(shapeMismatch(SHAPE, { ...SHAPE, cpus: 2 })).toEqual(['the source has 1 vCPUs and this VM 2: start it with --cpus 1']);
    expect(shapeMismatch(SHAPE, { ...SHAPE, memBytes: 128 * 1024 * 1024, regions: [{ start: 0, sizeBytes: 128 * 1024 * 1024 }] }))
      .toEqual(['the source has 268435456 bytes of RAM and this VM 134217728: start it with --mem 256M']);
  });

  it('verify names exactly the 2 MiB ranges that differ', async () => {
    const a = { start: 0, sizeBytes: 6 * 1024 * 1024, bytes: new Uint8Array(6 * 1024 * 1024) };
    const b = { ...a, bytes: new Uint8Array(a.bytes) };
    b.bytes[2 * 1024 * 1024 + 5] = 1;
    expect(verifyMismatches([a], await hashRegions([a]), await hashRegions([a]))).toEqual([]);
    expect(verifyMismatches([a], await hashRegions([a]), await hashRegions([b]))).toEqual(['0x200000-0x3fffff']);
  });

  it('chunks known to be zero hash as zeros without being read: the same hashes as reading them, and the claim is trusted', async () => {
    const { GuestMemory } = await import('../../../src/memory/guest-memory.js');
    const m = GuestMemory.create(9 * 1024 * 1024); // the last chunk is 1 MiB
    try {
      m.write((3 * 1024 * 1024) as never, Uint8Array.of(7)); // chunk 1
      const zeroChunks = m.knownZeroChunks(VERIFY_CHUNK_BYTES);
      expect([...zeroChunks[0]!]).toEqual([1, 0, 1, 1, 1]);
      expect(await hashRegions(m.regions, { zeroChunks })).toEqual(await hashRegions(m.regions));
      // A wrong claim is not checked: the chunk's data goes unseen, and verify would report it.
      expect(verifyMismatches(m.regions, await hashRegions(m.regions), await hashRegions(m.regions, { zeroChunks: [Uint8Array.of(1, 1, 1, 1, 1)] }))).toEqual(['0x200000-0x3fffff']);
    } finally {
      m.dispose();
    }
  });
});

describe('RAM records', () => {
  it('runs known to be zero are sent as zero runs without being read (never allocating them)', async () => {
    const { GuestMemory } = await import('../../../src/memory/guest-memory.js');
    const { encodeRamRecord, applyRamRecord } = await import('../../../src/migration/ram-record.js');
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
    const { GuestMemory } = await import('../../../src/memory/guest-memory.js');
    const { encodeRamRecord, applyRamRecord } = await import('../../../src/migration/ram-record.js');
    const { MigrationStreamError } = await import('../../../src/migration/protocol.js');
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
    const { GuestMemory } = await import('../../../src/memory/guest-memory.js');
    const { encodeRamRecord, applyRamRecord } = await import('../../../src/migration/ram-record.js');
    const { MigrationStreamError } = await import('../../../src/migration/protocol.js');
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
  const streamOf = async (src: import('../../../src/memory/guest-memory.js').GuestMemory, batches: number[][]) => {
    const { encodeRamRecord } = await import('../../../src/migration/ram-record.js');
    const pass = (n: number) => record(RecordType.PASS_END, Buffer.from([n, 0, 0, 0]));
    return Buffer.concat([pass(1), ...batches.map((b) => Buffer.from(encodeRamRecord(0, src.regions[0]!.bytes, b, { zero: 0, data: 0 }))), pass(2)]);
  };

  it('a reader hands out everything before the data, then the data in pieces, however TCP splits the stream; the pages land byte for byte', async () => {
    const { GuestMemory } = await import('../../../src/memory/guest-memory.js');
    const { RAM_RECORD_SPLIT, RamRecordLanding } = await import('../../../src/migration/ram-record.js');
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
    const { GuestMemory } = await import('../../../src/memory/guest-memory.js');
    const { RAM_RECORD_SPLIT, encodeRamRecord } = await import('../../../src/migration/ram-record.js');
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
    const { GuestMemory } = await import('../../../src/memory/guest-memory.js');
    const { RAM_RECORD_SPLIT, RamRecordLanding, encodeRamRecord } = await import('../../../src/migration/ram-record.js');
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
    const { GuestMemory } = await import('../../../src/memory/guest-memory.js');
    const { RAM_RECORD_SPLIT, RamRecordLanding, encodeRamRecord } = await import('../../../src/migration/ram-record.js');
    const { pageRanges } = await import('../../../src/memory/dirty-bitmap.js');
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
