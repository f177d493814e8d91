// PrecopySender without KVM: real guest memory, a dirty log that reports fixed pages, real loopback TCP
// to a real receiver (receiveMigration) or to a hand-written destination.
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { gpa, MiB } from '../../../src/arch/x86/layout.js';
import type { MigrationInfo } from '../../../src/control/vm-control.js';
import type { GuestMemory } from '../../../src/memory/guest-memory.js';
import { PrecopySender } from '../../../src/migration/precopy-sender.js';
import { BATCH_PAGES } from '../../../src/migration/ram-record.js';
import { RecordType, record, u32Record } from '../../../src/migration/protocol.js';
import { RecordReader } from '../../../src/migration/record-reader.js';
import { fixedDirtySource, senderParams } from '../../helpers/fixed-dirty-source.js';
import { disposables } from '../../helpers/disposables.js';
import { connectTo, loopbackDestination } from '../../helpers/loopback-destination.js';

const MEM = 8 * MiB;
const cleanup = disposables();
const memory = () => cleanup.memory(MEM);


/** A real destination over `dst`, listening on loopback. */
const incoming = async (dst: GuestMemory) => {
  const { listener, received } = await loopbackDestination(dst, cleanup);
  return { port: listener.port, received };
};

describe('PrecopySender', () => {
  it("reports query-migrate's counters as QEMU does: dirty-sync-count 1 through pass 1, remaining what is left to send of the pass, the dirty rate from each sync on", async () => {
    const src = memory();
    const dst = memory();
    src.fill(gpa(0), MEM, 0x5a); // every page data: pass 1 is several batches
    const { port, received } = await incoming(dst);
    const socket = await connectTo(port);
    let sender: PrecopySender | undefined;
    const atSync: MigrationInfo[] = [];
    const { source, syncs } = fixedDirtySource(src, 0b111, () => atSync.push(sender!.info()));
    sender = new PrecopySender(source, socket, () => senderParams(0), () => true);
    // Sampled between batches (the sender yields to the event loop after each).
    const samples: MigrationInfo[] = [];
    let sampling = true;
    const sample = () => { if (!sampling) return; samples.push(sender!.info()); setImmediate(sample); };
    setImmediate(sample);
    await sender.run();
    sampling = false;
    await received;
    const pass1 = samples.filter((i) => i.status === 'active' && i.ram['dirty-sync-count'] === 1);
    expect(pass1.length, 'samples during pass 1').toBeGreaterThan(1);
    // All of RAM as pass 1 starts, a batch less after each batch, never below zero.
    const remaining = pass1.map((i) => i.ram.remaining);
    expect(remaining.every((r, k) => r <= MEM && r >= 0 && (k === 0 || r <= remaining[k - 1]!))).toBe(true);
    expect(remaining.some((r) => r === MEM - BATCH_PAGES * 4096 || r === MEM - 2 * BATCH_PAGES * 4096), remaining.join(', ')).toBe(true);
    expect(pass1.some((i) => i['expected-downtime']! > 0)).toBe(true);
    // The dirty rate is the last sync's pages over the time since the sync before, from that sync on.
    const later = samples.filter((i) => i.status === 'active' && i.ram['dirty-sync-count'] >= 2);
    expect(later.length, 'samples after the first sync').toBeGreaterThan(0);
    expect(later.map((i) => i.ram['dirty-pages-rate'] > 0)).toEqual(later.map(() => true));
    // At each sync, everything before it has gone; the sync itself then counts.
    expect(atSync.map((i) => i.ram.remaining)).toEqual(atSync.map(() => 0));
    expect(atSync.map((i) => i.ram['dirty-sync-count'])).toEqual(atSync.map((_, k) => k + 1));
    const done = sender.info();
    expect(done.status).toBe('completed');
    // The start of logging, then every sync the source took (the switch-over's included).
    expect(done.ram['dirty-sync-count']).toBe(syncs() + 1);
    expect(done['setup-time']).toBeGreaterThanOrEqual(0);
    expect(done['setup-time']).toBeLessThanOrEqual(done['total-time']!);
    expect(pass1.some((i) => i.ram['pages-per-second'] > 0)).toBe(true);
    // The pause sent the last pages (the three dirty ones) and the state: downtime-bytes, the rest precopy-bytes.
    expect(done.ram['downtime-bytes']).toBeGreaterThan(3 * 4096);
    expect(done.ram['precopy-bytes'] + done.ram['downtime-bytes']).toBe(done.ram.transferred);
    expect(done.ram['multifd-bytes']).toBeUndefined();
    expect(dst.read(gpa(0), MEM).every((b) => b === 0x5a)).toBe(true);
  });

  it('pauses the guest only once the destination has applied every live pass (APPLIED): its backlog is no part of the downtime', async () => {
    const src = memory();
    src.fill(gpa(MiB), 64 * 4096, 0x5a);
    // A destination that says it applied each live pass 100 ms after its PASS_END, and notes what came when.
    const log: string[] = [];
    const server = net.createServer((s) => {
      const reader = new RecordReader();
      s.on('error', () => {});
      s.on('data', (d: Buffer) => {
        reader.push(d);
        for (let r = reader.next(); r !== undefined; r = reader.next()) {
          if (r.type === RecordType.HEADER) s.write(record(RecordType.ACCEPTED, new Uint8Array(0)));
          else if (r.type === RecordType.SWITCHOVER) log.push('SWITCHOVER');
          else if (r.type === RecordType.PASS_END && !log.includes('SWITCHOVER')) {
            const pass = r.payload.readUInt32LE(0);
            log.push(`PASS_END ${pass}`);
            setTimeout(() => {
              log.push(`APPLIED ${pass}`);
              if (!s.destroyed) s.write(u32Record(RecordType.APPLIED, pass));
            }, 100);
          } else if (r.type === RecordType.END) s.write(record(RecordType.LOADED, new Uint8Array(0)));
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanup.add({ dispose: () => server.close() });
    const socket = await connectTo((server.address() as net.AddressInfo).port);
    const { source } = fixedDirtySource(src, 0);
    const params = senderParams(0);
    const sender = new PrecopySender(source, socket, () => params, () => true, () => {});
    await sender.run();
    expect(sender.info().status).toBe('completed');
    const lastLivePass = log.filter((e) => e.startsWith('PASS_END')).length;
    expect(log.indexOf(`APPLIED ${lastLivePass}`), log.join(', ')).toBeGreaterThanOrEqual(0);
    expect(log.indexOf('SWITCHOVER'), log.join(', ')).toBeGreaterThan(log.indexOf(`APPLIED ${lastLivePass}`));
  });

  it('a guest that dirties nothing switches over at the first sync, which finds no page (an empty set has nothing left to settle)', async () => {
    const src = memory();
    const dst = memory();
    src.fill(gpa(MiB), 64 * 4096, 0x5a);
    const { port, received } = await incoming(dst);
    const socket = await connectTo(port);
    const { source, syncs } = fixedDirtySource(src, 0);
    const params = senderParams(0);
    const sender = new PrecopySender(source, socket, () => params, () => true, () => {});
    await sender.run();
    await received;
    expect(sender.info().status).toBe('completed');
    // Pass 1's sync finds nothing; an empty pass goes while the destination says it applied pass 1
    // (APPLIED), and its sync finds nothing; then the switch-over's own. Settling on empty sets took six.
    expect(syncs()).toBe(3);
    expect(dst.read(gpa(MiB), 64 * 4096).every((b) => b === 0x5a)).toBe(true);
  });
});
