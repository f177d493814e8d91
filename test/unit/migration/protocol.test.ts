import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  MAX_RECORD_BYTES, MigrationStreamError, RecordReader, RecordType, STREAM_START_BYTES, checkStreamStart,
  hashRegions, headerRecord, parseHeader, parseState, record, shapeMismatch, stateRecord, stateRecordTemplate, verifyMismatches,
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
      expect(rec.length).toBe(5 + 8 + 2 * 9 + 5 + 4096); // each zero run in 9 bytes
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
      bad.writeUInt32LE(256, 5 + 8 + 2 * (5 + 4096));
      expect(() => applyRamRecord(dst, bad.subarray(5))).toThrow(/names page 256 beyond region 0/);
      // Cut short inside the second page's data.
      const cut = encodeRamRecord(0, src.regions[0]!.bytes, [5, 6], { zero: 0, data: 0 }).subarray(5, 5 + 8 + 5 + 4096 + 5 + 100);
      expect(() => applyRamRecord(dst, cut)).toThrow(MigrationStreamError);
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
