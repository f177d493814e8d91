// DestinationAnswers: the destination's records as the source reads them, ACCEPTED and APPLIED noted.
import { describe, expect, it } from 'vitest';
import { DestinationAnswers } from '../../../src/migration/destination-answers.js';
import { MigrationStreamError, RecordType, record, u32Record } from '../../../src/migration/protocol.js';

const empty = new Uint8Array(0);

describe('DestinationAnswers', () => {
  it('notes ACCEPTED and each APPLIED as they pass, and returns what the source acts on, in order', () => {
    const answers = new DestinationAnswers();
    expect(answers.next()).toBeUndefined();
    const bytes = Buffer.concat([record(RecordType.ACCEPTED, empty), u32Record(RecordType.APPLIED, 2), u32Record(RecordType.APPLIED, 1), record(RecordType.LOADED, empty)]);
    answers.push(bytes.subarray(0, 7)); // records arrive in pieces
    expect(answers.next()).toBeUndefined();
    expect(answers.accepted).toBe(true);
    answers.push(bytes.subarray(7));
    expect(answers.next()?.type).toBe(RecordType.LOADED);
    expect(answers.appliedPass).toBe(2); // a late APPLIED of an earlier pass does not go back
    expect(answers.next()).toBeUndefined();
  });

  it('returns a second ACCEPTED as unexpected, and refuses an APPLIED that is not a pass number, and bytes that are no records', () => {
    const answers = new DestinationAnswers();
    answers.push(Buffer.concat([record(RecordType.ACCEPTED, empty), record(RecordType.ACCEPTED, empty)]));
    expect(answers.next()?.type).toBe(RecordType.ACCEPTED);
    answers.push(record(RecordType.APPLIED, new Uint8Array(3)));
    expect(() => answers.next()).toThrow(MigrationStreamError);
    const garbled = new DestinationAnswers();
    garbled.push(Buffer.from([RecordType.LOADED, 0xff, 0xff, 0xff, 0x7f]));
    expect(() => garbled.next()).toThrow(/the destination's answers are not records of this stream version \(record of 2147483647 bytes/);
    expect(() => new DestinationAnswers().next()).not.toThrow();
  });

  it('reads REFUSED with its reason before the answers that follow', () => {
    const answers = new DestinationAnswers();
    answers.push(Buffer.concat([record(RecordType.REFUSED, Buffer.from('machine shape differs')), record(RecordType.LOADED, empty)]));
    const refused = answers.next();
    expect(refused?.type).toBe(RecordType.REFUSED);
    expect(refused?.payload.toString()).toBe('machine shape differs');
    expect(answers.accepted).toBe(false);
  });
});
