import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  MigrationStreamError, RecordType, STREAM_START_BYTES, checkStreamStart, headerRecord, parseHeader, record, shapeMismatch, type MachineShape,
} from '../../../src/migration/protocol.js';
import { RecordReader } from '../../../src/migration/record-reader.js';
import { parseState, stateRecord } from '../../../src/migration/state-record.js';

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

});
