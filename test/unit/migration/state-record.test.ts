// STATE records: named pieces of VM state, their byte arrays carried raw.
import { describe, expect, it } from 'vitest';
import { MigrationStreamError } from '../../../src/migration/protocol.js';
import { parseState, stateRecord, stateRecordTemplate } from '../../../src/migration/state-record.js';

describe('STATE records', () => {
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

});
