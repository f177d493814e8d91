// A source facing a destination that answers wrongly never commits: whatever comes back instead of a
// HEADER's ACCEPTED and an END's LOADED (nothing, random bytes, another record, a record cut short, a
// second ACCEPTED, a malformed APPLIED, a REFUSED), the migration fails with the reason, no COMMIT
// goes out, and the source's guest runs again. Over real loopback TCP to a scripted destination, no KVM.
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { MiB, gpa } from '../../../src/arch/x86/layout.js';
import { PrecopySender } from '../../../src/migration/precopy-sender.js';
import { RecordType, record, u32Record } from '../../../src/migration/protocol.js';
import { RecordReader } from '../../../src/migration/record-reader.js';
import { disposables } from '../../helpers/disposables.js';
import { fixedDirtySource, senderParams } from '../../helpers/fixed-dirty-source.js';
import { connectTo } from '../../helpers/loopback-destination.js';

const cleanup = disposables();
const empty = new Uint8Array(0);

/**
 * What a scripted destination writes back after the HEADER and after the END. Unless it keeps the
 * connection open (as a good destination does, for COMMIT), it ends the connection with its last
 * answer: a record cut short would otherwise leave the source waiting for its rest (a destination
 * that hangs is for migrate_cancel).
 */
interface Script {
  readonly name: string;
  readonly afterHeader: Buffer;
  readonly afterEnd: Buffer;
  readonly keepOpen?: boolean;
  /** What the source's error must say. */
  readonly error: RegExp;
  /** The source must fail before it stops its guest. */
  readonly failsLive?: boolean;
}

const accepted = record(RecordType.ACCEPTED, empty);
const loaded = record(RecordType.LOADED, empty);
const nothing = Buffer.alloc(0);
/** Record types a destination sends that random bytes must not start with (they would be taken as such). */
const answerTypes = new Set<number>([RecordType.LOADED, RecordType.ACCEPTED, RecordType.APPLIED]);

/** `n` random bytes that do not start with an answer's record type. */
function junk(n: number): Buffer {
  const b = randomBytes(n);
  while (answerTypes.has(b[0]!)) b[0] = randomBytes(1)[0]!;
  return b;
}

const scripts: Script[] = [
  { name: 'no ACCEPTED (a service that reads and never answers)', afterHeader: nothing, afterEnd: loaded, keepOpen: true, failsLive: true, error: /the destination has not answered the stream's header \(no ACCEPTED\) after \d+ passes: .*the guest was not stopped/ },
  { name: 'the connection closed instead of LOADED', afterHeader: accepted, afterEnd: nothing, error: /connection to the destination failed/ },
  { name: 'REFUSED', afterHeader: accepted, afterEnd: record(RecordType.REFUSED, Buffer.from('no room')), error: /the destination refused the VM: no room/ },
  { name: 'LOADED cut short', afterHeader: accepted, afterEnd: loaded.subarray(0, 3), error: /connection to the destination failed/ },
  { name: 'APPLIED instead of LOADED', afterHeader: accepted, afterEnd: u32Record(RecordType.APPLIED, 1), error: /connection to the destination failed/ },
  { name: 'a record a destination never sends (COMMIT)', afterHeader: accepted, afterEnd: record(RecordType.COMMIT, empty), error: /unexpected COMMIT from the destination in state device/ },
  { name: 'a second ACCEPTED', afterHeader: Buffer.concat([accepted, accepted]), afterEnd: loaded, error: /unexpected ACCEPTED from the destination/ },
  { name: 'an APPLIED of 3 bytes', afterHeader: Buffer.concat([accepted, record(RecordType.APPLIED, new Uint8Array(3))]), afterEnd: loaded, error: /an APPLIED of 3 bytes, not 4/ },
  { name: 'a record longer than any', afterHeader: Buffer.concat([accepted, Buffer.from([RecordType.LOADED, 0xff, 0xff, 0xff, 0x7f])]), afterEnd: loaded, error: /larger than any valid record/ },
  ...[1, 4, 5, 9, 40, 200].map((n): Script => ({ name: `${n} random bytes instead of LOADED`, afterHeader: accepted, afterEnd: junk(n), error: /./ })),
  ...[1, 5, 9, 40, 200].map((n): Script => ({ name: `${n} random bytes after ACCEPTED`, afterHeader: Buffer.concat([accepted, junk(n)]), afterEnd: loaded, error: /./ })),
];

/** Runs one migration of an 8 MiB guest against a destination that follows `script`; says what came of it. */
async function migrateTo(script: Script): Promise<{ status: string; error: string; commitSeen: boolean; paused: boolean; everPaused: boolean; rejected: boolean }> {
  const src = cleanup.memory(8 * MiB);
  src.fill(gpa(MiB), 64 * 4096, 0x5a);
  let commitSeen = false;
  let closed: Promise<unknown> = Promise.resolve();
  const server = net.createServer((s) => {
    closed = new Promise((resolve) => s.once('close', resolve));
    const reader = new RecordReader();
    s.on('error', () => {});
    s.on('data', (d: Buffer) => {
      reader.push(d);
      for (let r = reader.next(); r !== undefined; r = reader.next()) {
        if (r.type === RecordType.HEADER) s.write(script.afterHeader);
        else if (r.type === RecordType.PASS_END) s.write(u32Record(RecordType.APPLIED, r.payload.readUInt32LE(0)));
        else if (r.type === RecordType.COMMIT) commitSeen = true;
        else if (r.type === RecordType.END) {
          if (script.keepOpen) s.write(script.afterEnd);
          else s.end(script.afterEnd);
        }
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanup.add({ dispose: () => server.close() });
  const socket = await connectTo((server.address() as net.AddressInfo).port);
  const { source, paused, everPaused } = fixedDirtySource(src, 0);
  const sender = new PrecopySender(source, socket, () => senderParams(0), () => true);
  const rejected = await sender.run().then(() => false, () => true);
  // Everything the source wrote has been read once the connection has closed at this end too.
  await closed;
  const info = sender.info();
  return { status: info.status!, error: info['error-desc'] ?? '', commitSeen, paused: paused(), everPaused: everPaused(), rejected };
}

describe('a destination that answers wrongly', () => {
  it('answering ACCEPTED and LOADED as it should, it gets COMMIT (the harness sees a COMMIT when there is one)', async () => {
    const r = await migrateTo({ name: 'as it should', afterHeader: accepted, afterEnd: loaded, keepOpen: true, error: /^$/ });
    expect(r).toEqual({ status: 'completed', error: '', commitSeen: true, paused: true, everPaused: true, rejected: false });
  });

  for (const script of scripts) {
    it(`${script.name}: failed with the reason, no COMMIT, the guest runs again`, async () => {
      const r = await migrateTo(script);
      expect(r.rejected).toBe(true);
      expect(r.status).toBe('failed');
      expect(r.error).toMatch(script.error);
      expect(r.commitSeen).toBe(false);
      expect(r.paused).toBe(false);
      if (script.failsLive) expect(r.everPaused).toBe(false);
    });
  }
});
