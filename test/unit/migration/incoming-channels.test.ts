// The receiver's multifd channels on their own: records pushed by hand into each channel's reader,
// the barrier and the refusals seen directly (multifd.test.ts runs them under receiveMigration, over TCP).
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { gpa, MiB } from '../../../src/arch/x86/layout.js';
import { IncomingChannels, type ChannelIn } from '../../../src/migration/incoming-channels.js';
import { channelRecord, syncRecord } from '../../../src/migration/multifd.js';
import { RAM_RECORD_SPLIT, RamRecordLanding, encodeRamRecord } from '../../../src/migration/ram-record.js';
import { RecordReader } from '../../../src/migration/record-reader.js';
import { StreamChecksum } from '../../../src/migration/stream-checksum.js';
import { disposables } from '../../helpers/disposables.js';

const cleanup = disposables();

/** A socket stand-in that only records pause and resume, which is all a channel asks of its socket. */
function pausable(): Socket & { paused: boolean } {
  return { paused: false, pause() { this.paused = true; return this; }, resume() { this.paused = false; return this; } } as unknown as Socket & { paused: boolean };
}

/** `count` channels of one session into `mem`, each record pushed by hand, with what each writes so far for its SYNC. */
function setup(count: number) {
  const mem = cleanup.memory(MiB);
  const scratch = cleanup.memory(MiB);
  const session = randomBytes(16);
  const refusals: string[] = [];
  const channels = new IncomingChannels(session, count, {
    refuse: (m) => { refusals.push(m); throw new Error(m); },
    unexpected: (t, where = '') => { refusals.push(`unexpected ${t}${where}`); throw new Error(`unexpected ${t}`); },
    takesRam: () => true,
    landing: (fixed, body) => new RamRecordLanding(mem, fixed, body, false),
  });
  const sent = Array.from({ length: count }, () => new StreamChecksum());
  channels.channels = Array.from({ length: count }, (_, index): ChannelIn => ({
    index, socket: pausable(), reader: new RecordReader(RAM_RECORD_SPLIT), checksum: new StreamChecksum(), landing: undefined, named: false, synced: 0, heldAt: undefined,
  }));
  channels.ready = true;
  const push = (i: number, buf: Buffer) => { sent[i]!.update(buf); channels.channels[i]!.reader.push(buf); };
  const page = (fill: number) => {
    scratch.fill(gpa(5 * 4096), 4096, fill);
    return encodeRamRecord(0, scratch.regions[0]!.bytes, [5], { zero: 0, data: 0 });
  };
  return {
    mem, session, channels, refusals,
    name: (i: number, as = i) => push(i, channelRecord(session, as)),
    page: (i: number, fill: number) => push(i, page(fill)),
    sync: (i: number, pass: number) => push(i, syncRecord(pass, sent[i]!.bytes, sent[i]!.value)),
    pump: (i: number) => channels.pump(channels.channels[i]!, () => false),
  };
}

describe('IncomingChannels', () => {
  it("holds a channel at its SYNC until every channel has it: a later pass's page never lands before an earlier one", () => {
    const t = setup(2);
    t.name(0);
    t.name(1);
    t.sync(1, 1);
    t.page(1, 0xbb); // pass 2's copy of page 5, on channel 1
    t.sync(1, 2);
    expect(t.pump(1)).toBe(true); // held at SYNC 1
    expect(t.channels.channels[1]!.heldAt).toBe(1);
    expect((t.channels.channels[1]!.socket as Socket & { paused: boolean }).paused).toBe(true);
    expect(t.mem.read(gpa(5 * 4096), 1)[0]).toBe(0); // not applied yet
    t.page(0, 0xaa); // pass 1's copy, on channel 0
    t.sync(0, 1);
    expect(t.pump(0)).toBe(true);
    expect(t.mem.read(gpa(5 * 4096), 1)[0]).toBe(0xaa);
    expect(t.channels.allSynced(1)).toBe(true);
    t.pump(1); // released: pass 2 goes on
    expect(t.mem.read(gpa(5 * 4096), 1)[0]).toBe(0xbb);
    expect(t.channels.channels[1]!.synced).toBe(2);
    expect(t.refusals).toEqual([]);
  });

  it('refuses a channel of another session, an index named twice or out of range, and a SYNC whose checksum does not match', () => {
    const other = setup(2);
    other.channels.channels[0]!.reader.push(channelRecord(randomBytes(16), 0));
    expect(() => other.pump(0)).toThrow(/session mismatch/);

    const twice = setup(2);
    twice.name(0, 1);
    twice.name(1, 1);
    twice.pump(0);
    expect(() => twice.pump(1)).toThrow(/index 1 repeated or out of range/);

    const corrupt = setup(1);
    corrupt.name(0);
    corrupt.page(0, 0x11);
    corrupt.channels.channels[0]!.reader.push(syncRecord(1, 1, 123n)); // not what was sent
    expect(() => corrupt.pump(0)).toThrow(/multifd channel 0 is corrupt/);
  });

  it('refuses a RAM record on a channel before it has named itself', () => {
    const t = setup(1);
    t.page(0, 0x22);
    expect(() => t.pump(0)).toThrow();
    expect(t.refusals[0]).toMatch(/first on multifd channel connection 0/);
  });
});
