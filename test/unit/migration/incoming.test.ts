// What a destination answers, over real loopback TCP: ACCEPTED for a HEADER it takes (stream version
// 11), then LOADED after a good END, and it lets its guest run only once the source answers COMMIT;
// REFUSED alone for a shape it cannot take. No KVM: the destination is guest memory and a state sink.
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { MiB } from '../../../src/arch/x86/layout.js';
import { GuestMemory } from '../../../src/memory/guest-memory.js';
import { receiveMigration, type MigrationDestination, type ReceivedMigration, type ReceiveOptions } from '../../../src/migration/incoming.js';
import { BATCH_PAGES, encodeRamRecord } from '../../../src/migration/ram-record.js';
import {
  RecordType, endRecord, headerRecord, record, recordName, switchoverRecord, u32Record, type MachineShape,
} from '../../../src/migration/protocol.js';
import { RecordReader } from '../../../src/migration/record-reader.js';
import { stateRecord } from '../../../src/migration/state-record.js';
import { hashRegions } from '../../../src/migration/ram-verify.js';
import { StreamChecksum } from '../../../src/migration/stream-checksum.js';
import { bulkReads, listenForMigration } from '../../../src/migration/transport.js';
import { freePort } from '../../helpers/free-port.js';

const MEM = 4 * MiB;
const cleanups: (() => void)[] = [];
afterEach(() => { cleanups.splice(0).forEach((c) => c()); });

async function destinationAndSource(options: ReceiveOptions = {}): Promise<{ shape: MachineShape; mem: GuestMemory; received: Promise<ReceivedMigration>; source: net.Socket; answers: () => string[] }> {
  const mem = GuestMemory.create(MEM);
  cleanups.push(() => mem.dispose());
  const shape: MachineShape = { memBytes: MEM, cpus: 1, regions: mem.regions.map((r) => ({ start: r.start, sizeBytes: r.sizeBytes })), devices: [] };
  const dst: MigrationDestination = { memory: mem, shape: () => shape, restoreState: () => {} };
  const listener = await listenForMigration(`tcp:127.0.0.1:${await freePort()}`);
  cleanups.push(() => listener.close());
  const received = listener.connection.then((s) => receiveMigration(dst, bulkReads(s), undefined, options));
  received.catch(() => {});
  const source = await new Promise<net.Socket>((resolve) => { const s = net.connect(listener.port, '127.0.0.1', () => resolve(s)); });
  cleanups.push(() => source.destroy());
  const reader = new RecordReader();
  const seen: string[] = [];
  source.on('data', (d: Buffer) => {
    reader.push(d);
    for (let r = reader.next(); r !== undefined; r = reader.next()) seen.push(recordName(r.type));
  });
  return { shape, mem, received, source, answers: () => seen };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Sends a whole (RAM-less) stream up to END, and waits for the destination's LOADED. */
async function streamUntilLoaded(shape: MachineShape, source: net.Socket, answers: () => string[]): Promise<void> {
  const sum = new StreamChecksum();
  const send = (b: Buffer) => { sum.update(b); source.write(b); };
  send(headerRecord(shape));
  await expect.poll(answers).toEqual(['ACCEPTED']);
  send(u32Record(RecordType.PASS_END, 1));
  send(stateRecord('vm', {}));
  source.write(endRecord(sum.bytes, sum.value));
  // A PASS_END before SWITCHOVER is a live pass's: APPLIED says it is in guest RAM.
  await expect.poll(answers).toEqual(['ACCEPTED', 'APPLIED', 'LOADED']);
}

/** 'pending', or how `p` has settled within `ms`. */
const settledWithin = (p: Promise<unknown>, ms: number) => Promise.race([p.then(() => 'resolved', () => 'rejected'), sleep(ms).then(() => 'pending')]);

describe('incoming migration answers', () => {
  it('ACCEPTED right after a HEADER it takes, before any RAM; LOADED after END; the guest may run only after COMMIT', async () => {
    const { shape, received, source, answers } = await destinationAndSource();
    await streamUntilLoaded(shape, source, answers);
    expect(await settledWithin(received, 100)).toBe('pending');
    source.write(record(RecordType.COMMIT, new Uint8Array(0)));
    await received;
  });

  // The split brain COMMIT prevents: the source's migration failed (a lost connection, a cancel) after
  // the destination sent LOADED but before the source read it, so the source runs the guest on.
  it('a connection lost between LOADED and COMMIT: the destination does not run the guest', async () => {
    const { shape, received, source, answers } = await destinationAndSource();
    await streamUntilLoaded(shape, source, answers);
    source.destroy();
    await expect(received).rejects.toThrow(/the connection closed after LOADED, before the source's COMMIT: the guest was not resumed here/);
  });

  it('with the COMMIT wait switched off (test-only), the same lost connection lets the guest run here too: the case above is caught', async () => {
    const { shape, received, source, answers } = await destinationAndSource({ testOnlyResumeOnLoaded: true });
    await streamUntilLoaded(shape, source, answers);
    source.destroy();
    expect(await settledWithin(received, 200)).toBe('resolved');
  });

  it('anything but COMMIT after LOADED is refused', async () => {
    const { shape, received, source, answers } = await destinationAndSource();
    await streamUntilLoaded(shape, source, answers);
    source.write(u32Record(RecordType.PASS_END, 2));
    await expect(received).rejects.toThrow(/unexpected PASS_END record in state loaded/);
  });

  it('SWITCHOVER, then the tail after a pause longer than the wait awake: LOADED all the same; a second SWITCHOVER is refused', async () => {
    // The destination decodes its rehearsal records at SWITCHOVER; one it cannot decode changes nothing.
    const rehearsalRecords = [stateRecord('vm', { irqchips: [new Uint8Array(8)] }), record(RecordType.STATE, Buffer.from([9]))];
    const { shape, received, source, answers } = await destinationAndSource({ rehearsalRecords });
    const sum = new StreamChecksum();
    const send = (b: Buffer) => { sum.update(b); source.write(b); };
    send(headerRecord(shape));
    await expect.poll(answers).toEqual(['ACCEPTED']);
    send(switchoverRecord(false));
    await sleep(50); // the destination waits awake for SWITCHOVER_SPIN_MS, then sleeps as usual
    send(u32Record(RecordType.PASS_END, 1));
    send(stateRecord('vm', {}));
    source.write(endRecord(sum.bytes, sum.value));
    // The PASS_END after SWITCHOVER is the last pass's, answered by LOADED alone.
    await expect.poll(answers).toEqual(['ACCEPTED', 'LOADED']);
    source.write(record(RecordType.COMMIT, new Uint8Array(0)));
    await received;

    const second = await destinationAndSource();
    second.source.write(headerRecord(second.shape));
    second.source.write(switchoverRecord(false));
    second.source.write(switchoverRecord(false));
    await expect(second.received).rejects.toThrow(/unexpected SWITCHOVER record in state ram/);
  });

  /** A source's RAM records for every page of `src`, each page random but the last of each batch, which stays zero. */
  const ramRecords = (src: GuestMemory): Buffer[] => {
    const pages = MEM / 4096;
    const records: Buffer[] = [];
    for (let first = 0; first < pages; first += BATCH_PAGES) {
      const batch = Array.from({ length: Math.min(BATCH_PAGES, pages - first) }, (_, i) => first + i);
      for (const p of batch.slice(0, -1)) src.write((p * 4096) as never, randomBytes(4096));
      records.push(Buffer.from(encodeRamRecord(0, src.regions[0]!.bytes, batch, { zero: 0, data: 0 })));
    }
    return records;
  };

  /**
   * Sends a stream whose RAM is every page of a fresh guest memory, through `alter` (which may change a
   * record's bytes after the checksum has taken them), up to END; returns that memory. With
   * `switchover`, the last pass follows a SWITCHOVER saying whether VERIFY follows, and `tail` (given
   * the source's memory) goes between the STATE and END.
   */
  const sendRamStream = async (
    d: Awaited<ReturnType<typeof destinationAndSource>>,
    { alter = (_index: number, r: Buffer) => r, switchover, tail = async () => [] }:
      { alter?: (index: number, r: Buffer) => Buffer; switchover?: { verifyFollows: boolean }; tail?: (src: GuestMemory) => Promise<Buffer[]> } = {},
  ): Promise<GuestMemory> => {
    const src = GuestMemory.create(MEM);
    cleanups.push(() => src.dispose());
    const sum = new StreamChecksum();
    const send = (b: Buffer) => { sum.update(b); d.source.write(b); };
    send(headerRecord(d.shape));
    await expect.poll(d.answers).toEqual(['ACCEPTED']);
    ramRecords(src).forEach((r, i) => {
      sum.update(r);
      d.source.write(alter(i, r));
    });
    if (switchover !== undefined) send(switchoverRecord(switchover.verifyFollows));
    send(u32Record(RecordType.PASS_END, 1));
    send(stateRecord('vm', {}));
    for (const r of await tail(src)) send(r);
    d.source.write(endRecord(sum.bytes, sum.value));
    return src;
  };

  it('RAM pages land byte for byte, most of them read from the connection straight into guest memory', async () => {
    const d = await destinationAndSource();
    const src = await sendRamStream(d);
    await expect.poll(d.answers).toEqual(['ACCEPTED', 'APPLIED', 'LOADED']);
    d.source.write(record(RecordType.COMMIT, new Uint8Array(0)));
    const { ramBytesReadDirect } = await d.received;
    expect(Buffer.from(d.mem.regions[0]!.bytes).equals(Buffer.from(src.regions[0]!.bytes))).toBe(true);
    expect(ramBytesReadDirect).toBeGreaterThan(MEM / 2);
  });

  it('a byte of RAM changed on the way, in data read straight into guest memory: the END checksum catches it, REFUSED', async () => {
    const d = await destinationAndSource();
    await sendRamStream(d, { alter: (i, r) => {
      if (i !== 1) return r; // the second record, after the first has landed whole
      const changed = Buffer.from(r);
      changed[changed.length - 10 * 4096] ^= 1; // deep in the data, far past what one read of the record's start takes
      return changed;
    } });
    await expect(d.received).rejects.toThrow(/END checksum does not match/);
    await expect.poll(d.answers).toEqual(['ACCEPTED', 'APPLIED', 'REFUSED']);
  });

  const verifyRecord = (hashes: string[][]) => record(RecordType.VERIFY, Buffer.from(JSON.stringify(hashes)));

  it('VERIFY announced in SWITCHOVER: RAM that matches the source\'s hashes is LOADED; one 2 MiB range off is REFUSED, named', async () => {
    const d = await destinationAndSource();
    await sendRamStream(d, { switchover: { verifyFollows: true }, tail: async (src) => [verifyRecord(await hashRegions(src.regions))] });
    await expect.poll(d.answers).toEqual(['ACCEPTED', 'LOADED']);
    d.source.write(record(RecordType.COMMIT, new Uint8Array(0)));
    await d.received;

    const off = await destinationAndSource();
    await sendRamStream(off, { switchover: { verifyFollows: true }, tail: async (src) => {
      const hashes = await hashRegions(src.regions);
      hashes[0]![1] = '0'.repeat(16); // as if the destination's second 2 MiB had lost a page
      return [verifyRecord(hashes)];
    } });
    await expect(off.received).rejects.toThrow(/RAM verification failed: guest memory 0x200000-0x3fffff differs from the source's/);
    await expect.poll(off.answers).toEqual(['ACCEPTED', 'REFUSED']);
  });

  it('VERIFY and its announcement must go together, and SWITCHOVER carries one byte, 0 or 1: REFUSED otherwise', async () => {
    const unannounced = await destinationAndSource();
    await sendRamStream(unannounced, { switchover: { verifyFollows: false }, tail: async (src) => [verifyRecord(await hashRegions(src.regions))] });
    await expect(unannounced.received).rejects.toThrow(/VERIFY record that SWITCHOVER did not announce/);
    const missing = await destinationAndSource();
    await sendRamStream(missing, { switchover: { verifyFollows: true } });
    await expect(missing.received).rejects.toThrow(/END without the VERIFY record that SWITCHOVER announced/);
    for (const payload of [new Uint8Array(0), Uint8Array.of(2)]) {
      const bad = await destinationAndSource();
      bad.source.write(headerRecord(bad.shape));
      bad.source.write(record(RecordType.SWITCHOVER, payload));
      await expect(bad.received).rejects.toThrow(/SWITCHOVER record of \d bytes.*: it carries one byte, 0 or 1/);
    }
  });

  it('a shape it cannot take: REFUSED, and never ACCEPTED', async () => {
    const { shape, received, source, answers } = await destinationAndSource();
    source.write(headerRecord({ ...shape, cpus: 2 }));
    await expect(received).rejects.toThrow(/machine shape mismatch/);
    await sleep(50);
    expect(answers()).toEqual(['REFUSED']);
  });
});
