// The stream's record reader: records back out of bytes as TCP delivers them (round trips through it are in protocol.test.ts).
import { describe, expect, it } from 'vitest';
import { MAX_RECORD_BYTES, RecordType, record } from '../../../src/migration/protocol.js';
import { RecordReader } from '../../../src/migration/record-reader.js';

describe('RecordReader', () => {
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

  it('refuses a record longer than any valid one before buffering it', () => {
    const reader = new RecordReader();
    const head = Buffer.alloc(5);
    head.writeUInt8(RecordType.RAM, 0);
    head.writeUInt32LE(MAX_RECORD_BYTES + 1, 1);
    reader.push(head);
    expect(() => reader.next()).toThrow(/larger than any valid record/);
  });

});
