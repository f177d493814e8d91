import { createHash } from 'node:crypto';
import type { Socket } from 'node:net';
import { gpa } from '../arch/x86/layout.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import {
  PAGE_BYTES, PageKind, RecordReader, RecordType, hashRegions, parseHeader, parseState, record,
  recordName, shapeMismatch, verifyMismatches, MigrationStreamError, type MachineShape,
} from './protocol.js';

/** What the receiver needs of the destination VM (created, vCPUs not started). */
export interface MigrationDestination {
  readonly memory: GuestMemory;
  shape(): MachineShape;
  restoreState(pieces: ReadonlyMap<string, unknown>): void;
}

/** The receiver's states, in order; a record that does not belong to the current one is refused. */
type ReceiverState = 'header' | 'ram' | 'device' | 'end' | 'loaded';

/** How long a refusing destination waits for the source to hang up before closing itself. */
const REFUSED_LINGER_MS = 3000;

/** Why an incoming migration was refused or broke off; the guest was not resumed. */
export class IncomingMigrationError extends Error {
  override name = 'IncomingMigrationError';
}

/**
 * Receives one migration stream into `vm` (see protocol.ts for the sequence). RAM pages are written as
 * they come (the guest is not running); state records are held until END proves the stream complete
 * and intact, and only then loaded. With a VERIFY record, RAM is hashed and compared before LOADED is
 * sent. Resolves once LOADED is sent: the caller may then start the vCPUs. Rejects, after telling the
 * source REFUSED where the connection still allows, on anything else: the guest must not run.
 */
export async function receiveMigration(vm: MigrationDestination, socket: Socket): Promise<{ passes: number; bytes: number }> {
  const reader = new RecordReader();
  const hash = createHash('sha1');
  let bytes = 0;
  let state: ReceiverState = 'header';
  let passes = 0;
  const pieces = new Map<string, unknown>();
  let verify: string[][] | undefined;
  const regions = vm.memory.regions;

  let refused = false;
  /** Tells the source why (it then resumes its guest) and abandons the stream. */
  const refuse = (message: string): never => {
    if (!refused && !socket.destroyed) socket.end(record(RecordType.REFUSED, Buffer.from(message)));
    refused = true;
    throw new IncomingMigrationError(message);
  };
  const unexpected = (type: number): never => refuse(`unexpected ${recordName(type)} record in state ${state}`);

  const handle = (type: number, payload: Buffer): void => {
    switch (type) {
      case RecordType.HEADER: {
        if (state !== 'header') unexpected(type);
        const problems = shapeMismatch(parseHeader(payload), vm.shape());
        if (problems.length > 0) refuse(`machine shape mismatch: ${problems.join('; ')}`);
        state = 'ram';
        return;
      }
      case RecordType.RAM: {
        if (state !== 'ram') unexpected(type);
        const regionIndex = payload.readUInt32LE(0);
        const count = payload.readUInt32LE(4);
        const region = regions[regionIndex];
        if (region === undefined) refuse(`RAM record for region ${regionIndex}, which this VM does not have`);
        const pageCount = region!.sizeBytes / PAGE_BYTES;
        let at = 8;
        for (let i = 0; i < count; i++) {
          if (at + 5 > payload.length) refuse('RAM record shorter than its page count');
          const page = payload.readUInt32LE(at);
          const kind = payload.readUInt8(at + 4);
          at += 5;
          if (page >= pageCount) refuse(`RAM record names page ${page} beyond region ${regionIndex}'s ${pageCount} pages`);
          const address = gpa(region!.start + page * PAGE_BYTES);
          if (kind === PageKind.ZERO) {
            vm.memory.fill(address, PAGE_BYTES, 0);
          } else if (kind === PageKind.DATA) {
            if (at + PAGE_BYTES > payload.length) refuse('RAM record shorter than its pages');
            vm.memory.write(address, payload.subarray(at, at + PAGE_BYTES));
            at += PAGE_BYTES;
          } else refuse(`RAM record with page kind ${kind}`);
        }
        if (at !== payload.length) refuse('RAM record longer than its pages');
        return;
      }
      case RecordType.PASS_END:
        if (state !== 'ram') unexpected(type);
        passes = payload.readUInt32LE(0);
        return;
      case RecordType.STATE: {
        if (state !== 'ram' && state !== 'device') unexpected(type);
        state = 'device';
        const { name, state: s } = parseState(payload);
        pieces.set(name, s);
        return;
      }
      case RecordType.VERIFY:
        if (state !== 'device') unexpected(type);
        verify = JSON.parse(payload.toString()) as string[][];
        return;
      default:
        unexpected(type);
    }
  };

  return await new Promise((resolve, reject) => {
    let failed = false;
    const failWith = (e: unknown) => {
      if (failed) return;
      failed = true;
      const error = e instanceof IncomingMigrationError ? e : new IncomingMigrationError(e instanceof Error ? e.message : String(e), { cause: e });
      if (!refused || socket.destroyed) {
        socket.destroy();
        reject(error);
        return;
      }
      // After REFUSED, keep reading (and dropping) what the source still sends until it hangs up:
      // closing with unread bytes would reset the connection and could destroy the REFUSED in flight.
      const timer = setTimeout(() => socket.destroy(), REFUSED_LINGER_MS);
      socket.once('close', () => {
        clearTimeout(timer);
        reject(error);
      });
    };
    socket.on('error', (e) => failWith(new IncomingMigrationError(`migration connection failed: ${e.message}`)));
    socket.on('close', () => {
      if (state !== 'loaded' && !failed) failWith(new IncomingMigrationError(`the migration stream ended early, in state ${state}: the guest was not resumed`));
    });
    socket.on('data', (chunk: Buffer) => {
      if (state === 'loaded' || failed) return;
      try {
        reader.push(chunk);
        for (let r = reader.next(); r !== undefined; r = reader.next()) {
          if (r.type === RecordType.END) {
            if (state !== 'device') unexpected(r.type);
            const count = Number(r.payload.readBigUInt64LE(0));
            const digest = r.payload.subarray(8, 28);
            if (count !== bytes || !digest.equals(hash.digest())) refuse('the migration stream is corrupt: its END checksum does not match what arrived');
            state = 'end';
            vm.restoreState(pieces);
            if (verify !== undefined) {
              const bad = verifyMismatches(regions, verify, hashRegions(regions));
              if (bad.length > 0) {
                refuse(`RAM verification failed: guest memory ${bad.slice(0, 8).join(', ')}${bad.length > 8 ? ` and ${bad.length - 8} more 2 MiB ranges` : ''} differs from the source's (SHA-256 at switch-over); not resuming`);
              }
            }
            state = 'loaded';
            socket.write(record(RecordType.LOADED, new Uint8Array(0)));
            resolve({ passes, bytes });
            return;
          }
          hash.update(r.raw);
          bytes += r.raw.length;
          handle(r.type, r.payload);
        }
      } catch (e) {
        if (e instanceof MigrationStreamError && !refused && !socket.destroyed) {
          socket.end(record(RecordType.REFUSED, Buffer.from(e.message)));
          refused = true;
        }
        failWith(e);
      }
    });
  });
}
