import { tracePhase } from '../machine/phase-trace.js';
import type { Socket } from 'node:net';
import type { GuestMemory } from '../memory/guest-memory.js';
import { CHANNELS_TIMEOUT_MS, parseMultifd } from './multifd.js';
import { IncomingChannels, takeData, type RamConnection } from './incoming-channels.js';
import { RAM_RECORD_SPLIT, RamRecordLanding } from './ram-record.js';
import { COMMIT_SPIN_MS, SWITCHOVER_SPIN_MS, connectionErrorText, giveWay, readChunks, spinUntilReadable, type ReadPlacement } from './transport.js';
import { StreamChecksum } from './stream-checksum.js';
import {
  RECORD_HEADER_BYTES, TAIL_DECODING_ROUNDS, STREAM_START_BYTES, checkStreamStart, RecordType, endRecord, parseEnd, parseHeader, parseSwitchover, record, recordName, shapeMismatch, u32Record, MigrationStreamError, type MachineShape,
} from './protocol.js';
import { RecordReader, type ReadRecord } from './record-reader.js';
import { parseState } from './state-record.js';
import { hashGuestMemory, verifyMismatches } from './ram-verify.js';

/** What the receiver needs of the destination VM (created, vCPUs not started). */
export interface MigrationDestination {
  readonly memory: GuestMemory;
  shape(): MachineShape;
  restoreState(pieces: ReadonlyMap<string, unknown>): void;
  /** Its vCPU threads wait awake to be started (Vm.standBy), once LOADED has gone out. */
  standBy?(): void;
  /** All of RAM is zero but for the pages marked written (Vm.ramZeroUnlessMarked): zero pages that are not marked need no writing. */
  readonly ramZeroUnlessMarked?: boolean;
}

/** The next connections to the incoming address (multifd channels), TLS already applied where on. */
export type AcceptChannels = (count: number, timeoutMs: number) => Promise<Socket[]>;

/** The receiver's states, in order; a record that does not belong to the current one is refused. */
type ReceiverState = 'header' | 'ram' | 'device' | 'end' | 'loaded' | 'committed';

/** Test-only switches of receiveMigration, so a safety test can show the failure it prevents. */
export interface ReceiveOptions {
  /** Resolve (start the guest) as soon as LOADED is sent, without waiting for the source's COMMIT. */
  readonly testOnlyResumeOnLoaded?: boolean;
  /** Take an END whose checksum does not match what arrived (the stream's integrity check off). */
  readonly testOnlySkipEndCheck?: boolean;
  /** The connections' x-peer-timeout (transport.ts, watchForDeadPeer), for the error that names it. */
  readonly peerTimeoutMs?: number;
  /**
   * STATE records of this VM's own state (encoded before the stream, by its restore rehearsal),
   * decoded once more and dropped when SWITCHOVER comes: see rehearseTail.
   */
  readonly rehearsalRecords?: readonly Buffer[];
}

/**
 * A connection reads a RAM record's data straight into guest memory (ReadPlacement) run by run, for
 * runs of consecutive pages at least this long; shorter runs are read into the connection's buffer and
 * copied, since a read per page would cost more than the copy.
 */
const DIRECT_READ_MIN_BYTES = 64 * 1024;
/**
 * While RAM may still come live (on the main connection, until SWITCHOVER), a connection
 * reads the start of each record this much at a time: enough for a record header and a batch's
 * entries (BATCH_PAGES of them), so that a large read does not take the next RAM record's data into
 * the connection's buffer, to be copied. Data too scattered to read straight into guest memory is
 * read with the next record's start.
 */
const RECORD_START_READ_BYTES = 16 * 1024;

/** What a completed incoming migration took in. */
export interface ReceivedMigration {
  /** Passes over RAM the source made. */
  readonly passes: number;
  /** Bytes of the main connection's stream up to END. */
  readonly bytes: number;
  /** Bytes of RAM pages read from the connection straight into guest memory (the rest were copied). */
  readonly ramBytesReadDirect: number;
}

/** How long a refusing destination waits for the source to hang up before closing itself. */
const REFUSED_LINGER_MS = 3000;

/** Why an incoming migration was refused or broke off; the guest was not resumed. */
export class IncomingMigrationError extends Error {
  override name = 'IncomingMigrationError';
}

/**
 * The connection ended between this destination's LOADED and the source's COMMIT. The source may have
 * resumed the guest (its migration failed, or was cancelled, before it read LOADED), so it must not
 * run here too; or it may have committed, and then the guest runs nowhere, which only the source's
 * own report can tell.
 */
function noCommit(how: string): IncomingMigrationError {
  return new IncomingMigrationError(`${how} after LOADED, before the source's COMMIT: the guest was not resumed here, `
    + 'since a source whose migration fails before it reads LOADED resumes the guest itself; if the source reports the migration completed, the guest runs on neither host');
}

/**
 * The tail's decoding in steps, for rehearsals only: each of `records` (STATE records of this VM's own
 * state) decoded, then an END record for what `checksum` has taken, decoded and checked. The results
 * are dropped; nothing in them touches the VM.
 */
function tailDecodingSteps(records: readonly Buffer[], checksum: StreamChecksum): (() => void)[] {
  return [
    ...records.map((r) => () => { parseState(r.subarray(RECORD_HEADER_BYTES)); }),
    () => {
      const end = parseEnd(endRecord(checksum.bytes, checksum.value).subarray(RECORD_HEADER_BYTES));
      checksum.matches(end.bytesBefore, end.hash);
    },
  ];
}

/**
 * Runs the tail's decoding (tailDecodingSteps) on `records` TAIL_DECODING_ROUNDS times over, so that
 * it runs warm when the tail comes. For a destination that waits for its source to connect.
 */
export function rehearseTailDecoding(records: readonly Buffer[]): void {
  const checksum = new StreamChecksum();
  const steps = tailDecodingSteps(records, checksum);
  for (let round = 0; round < TAIL_DECODING_ROUNDS; round++) {
    for (const r of records) checksum.update(r);
    for (const step of steps) step();
  }
}

/**
 * Receives one migration stream into `vm` (see protocol.ts for the sequence). RAM pages are written as
 * they come (the guest is not running); state records are held until END proves the stream complete
 * and intact, and only then loaded. With a VERIFY record, RAM is hashed and compared before LOADED is
 * sent. Resolves once the source has answered LOADED with COMMIT: the caller may then start the vCPUs.
 * Rejects, after telling the source REFUSED where the connection still allows, on anything else,
 * including a connection lost between LOADED and COMMIT: the guest must not run.
 * With multifd, `acceptChannels` supplies the channel connections; without it MULTIFD is refused.
 */
export async function receiveMigration(vm: MigrationDestination, socket: Socket, acceptChannels?: AcceptChannels, options: ReceiveOptions = {}): Promise<ReceivedMigration> {
  const main: RamConnection = { reader: new RecordReader(RAM_RECORD_SPLIT), checksum: new StreamChecksum(), landing: undefined };
  const { reader, checksum } = main;
  let ramBytesReadDirect = 0;
  let state: ReceiverState = 'header';
  let passes = 0;
  /** SWITCHOVER has come: the source's guest is stopping, and the rest of the stream is on its way. */
  let awaitingTail = false;
  let sawRam = false;
  /** SWITCHOVER said VERIFY follows. */
  let verifyAnnounced = false;
  /** This side's RAM hashes for VERIFY, begun once the last pass is in (applied). */
  let ramHashes: Promise<string[][]> | undefined;
  /** The migration has failed: anything still running in the background stops (hashRegions). */
  let failed = false;
  const pieces = new Map<string, unknown>();
  let verify: string[][] | undefined;
  const regions = vm.memory.regions;
  /** Read once: nothing runs the guest while the stream comes in. */
  const zeroUnlessMarked = vm.ramZeroUnlessMarked === true;
  /** Multifd: the session and its channels (empty until they have connected). */
  let multifd: IncomingChannels | undefined;
  /** Multifd: the main connection applies nothing after PASS_END n until every channel has SYNC n. */
  let mainHeldAt: number | undefined;

  let refused = false;
  /** Tells the source why (it then resumes its guest) and abandons the stream. */
  const refuse = (message: string): never => {
    if (!refused && !socket.destroyed) socket.end(record(RecordType.REFUSED, Buffer.from(message)));
    refused = true;
    throw new IncomingMigrationError(message);
  };
  const unexpected = (type: number, where = ''): never => refuse(`unexpected ${recordName(type)} record${where} in state ${state}`);
  /**
   * Tells the source that pass n is in guest RAM, for every live pass (not the one after SWITCHOVER,
   * whose answer is LOADED): it switches over only once this side has caught up (protocol.ts, APPLIED).
   */
  const applied = (pass: number) => {
    if (!awaitingTail) socket.write(u32Record(RecordType.APPLIED, pass));
    // The last pass is in: RAM is final, and is hashed now, while the source hashes its own.
    else if (verifyAnnounced && ramHashes === undefined) {
      ramHashes = hashFinalRam();
      ramHashes.catch(() => {}); // its failure is met at END, where the hashes are needed
    }
  };
  /** This side's hashes for VERIFY, of RAM as the last pass left it; they stop if the migration fails. */
  const hashFinalRam = () => hashGuestMemory(vm.memory, () => failed);
  const allSynced = (pass: number) => multifd !== undefined && multifd.allSynced(pass);
  /** LOADED has gone out: nothing but the main connection's COMMIT is read any more. */
  const handedOver = () => state === 'loaded' || state === 'committed';

  /**
   * The tail's decoding (STATE records, END and its checksum), run once more on this VM's own records
   * while the source pauses its guest, unless the tail has come already: what runs only for the tail
   * ran last long before (rehearseTailDecoding, before the stream), and on kvm_pvm decoding the tail
   * then took 0.2-0.4 ms of the downtime, the END check alone 0.07-0.2.
   * Piece by piece, giving way before each and stopping as soon as the tail has come: woken by
   * SWITCHOVER, this thread may have taken the very CPU the source's main thread was on (a wakeup
   * preempts), and the source's work up to END is downtime. Whole, the rehearsal (0.35 ms) held the
   * source's pause up to 0.66 ms; alternated idle 1 GiB switch-overs, 7 runs of 8 a side, pause
   * medians 0.23-0.38 ms against 0.25-0.65, pause to the destination's vCPU running 1.75-2.37 ms
   * against 1.95-2.75.
   */
  const rehearseTail = (): void => {
    const tailHasCome = () => reader.pendingBytes > 0 || spinUntilReadable([socket], 0);
    const pieces = tailDecodingSteps(options.rehearsalRecords ?? [], checksum);
    if (tailHasCome()) return;
    try {
      for (const piece of pieces) {
        giveWay(0);
        if (tailHasCome()) return;
        piece();
      }
    } catch (e) {
      // Only a rehearsal: the migration goes on.
      process.stderr.write(`tsvmm: rehearsing the tail's decoding failed (the migration goes on): ${e instanceof Error ? e.message : String(e)}\n`);
    }
  };

  const handle = ({ type, payload, body }: ReadRecord): void => {
    switch (type) {
      case RecordType.HEADER: {
        if (state !== 'header') unexpected(type);
        const problems = shapeMismatch(parseHeader(payload), vm.shape());
        if (problems.length > 0) refuse(`machine shape mismatch: ${problems.join('; ')}`);
        state = 'ram';
        socket.write(record(RecordType.ACCEPTED, new Uint8Array(0)));
        return;
      }
      case RecordType.MULTIFD: {
        if (state !== 'ram' || sawRam || multifd !== undefined) unexpected(type);
        if (acceptChannels === undefined) refuse('this destination cannot take multifd channels here');
        const { channels, session } = parseMultifd(payload);
        multifd = new IncomingChannels(Buffer.from(session), channels, {
          refuse,
          unexpected,
          takesRam: () => state === 'ram',
          landing: (fixed, body) => new RamRecordLanding(vm.memory, fixed, body, zeroUnlessMarked),
        });
        return;
      }
      case RecordType.RAM:
        if (state !== 'ram') unexpected(type);
        if (multifd !== undefined) unexpected(type, ' on the main connection of a multifd migration');
        sawRam = true;
        main.landing = new RamRecordLanding(vm.memory, payload, body, zeroUnlessMarked);
        return;
      case RecordType.SWITCHOVER:
        if (state !== 'ram' || awaitingTail) unexpected(type);
        awaitingTail = true;
        verifyAnnounced = parseSwitchover(payload).verifyFollows;
        rehearseTail();
        return;
      case RecordType.PASS_END:
        if (state !== 'ram') unexpected(type);
        passes = payload.readUInt32LE(0);
        if (multifd !== undefined) mainHeldAt = passes;
        else applied(passes);
        return;
      case RecordType.STATE: {
        if (state !== 'ram' && state !== 'device') unexpected(type);
        if (state === 'ram') tracePhase('incoming migration: first STATE record');
        state = 'device';
        const { name, state: s } = parseState(payload);
        pieces.set(name, s);
        return;
      }
      case RecordType.VERIFY:
        if (state !== 'device') unexpected(type);
        if (!verifyAnnounced) refuse('VERIFY record that SWITCHOVER did not announce');
        verify = JSON.parse(payload.toString()) as string[][];
        return;
      default:
        unexpected(type);
    }
  };

  return await new Promise((resolve, reject) => {
    const failWith = (e: unknown) => {
      if (failed) return;
      failed = true;
      multifd?.channels.forEach((c) => c.socket.destroy());
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
    const guard = (f: () => void) => {
      try {
        f();
      } catch (e) {
        if (e instanceof MigrationStreamError && !refused && !socket.destroyed) {
          socket.end(record(RecordType.REFUSED, Buffer.from(e.message)));
          refused = true;
        }
        failWith(e);
      }
    };

    /** Applies every record that may be applied now, on every connection, in a safe order. */
    let pumping = false;
    let again = false;
    const pumpAll = () => {
      if (pumping) {
        again = true;
        return;
      }
      pumping = true;
      try {
        do {
          again = false;
          pumpMain();
          for (const ch of multifd?.channels ?? []) {
            if (multifd!.pump(ch, () => failed || handedOver())) again = true; // the main connection may wait on that barrier too
          }
        } while (again && !failed && !handedOver());
      } finally {
        pumping = false;
      }
    };

    const pumpMain = () => {
      while (!failed && state !== 'end' && state !== 'committed') {
        if (state === 'loaded') {
          const r = reader.next();
          if (r === undefined) return;
          if (r.type !== RecordType.COMMIT) unexpected(r.type);
          state = 'committed';
          tracePhase('incoming migration: COMMIT received');
          resolve({ passes, bytes: checksum.bytes, ramBytesReadDirect });
          return;
        }
        if (multifd !== undefined && !multifd.ready) return; // channels still connecting
        if (mainHeldAt !== undefined) {
          if (!allSynced(mainHeldAt)) return;
          applied(mainHeldAt);
          mainHeldAt = undefined;
          socket.resume();
        }
        if (main.landing !== undefined && !takeData(main)) return;
        const r = reader.next();
        if (r === undefined) return;
        if (r.type === RecordType.END) {
          if (state !== 'device') unexpected(r.type);
          const { bytesBefore, hash } = parseEnd(r.payload);
          if (!checksum.matches(bytesBefore, hash) && !options.testOnlySkipEndCheck) refuse('the migration stream is corrupt: its END checksum does not match what arrived');
          state = 'end';
          tracePhase('incoming migration: END checks out, restoring state');
          vm.restoreState(pieces);
          tracePhase('incoming migration: state restored');
          const loaded = () => {
            state = 'loaded';
            socket.write(record(RecordType.LOADED, new Uint8Array(0)));
            tracePhase('incoming migration: LOADED sent');
            // COMMIT comes next, and with it the guest's start: its vCPU threads wait for that awake,
            // woken now while LOADED and COMMIT make their round trip (asleep, a thread took ~0.2 ms
            // to wake from the start on kvm_pvm).
            vm.standBy?.();
            if (options.testOnlyResumeOnLoaded) {
              state = 'committed';
              resolve({ passes, bytes: checksum.bytes, ramBytesReadDirect });
            }
          };
          if (verifyAnnounced && verify === undefined) refuse('END without the VERIFY record that SWITCHOVER announced');
          // Without VERIFY, at once: the source's guest is stopped until LOADED arrives.
          if (verify === undefined) {
            loaded();
            return;
          }
          // Hashing RAM takes a while: the event loop keeps running, and nothing more is read meanwhile.
          socket.pause();
          void (ramHashes ?? hashFinalRam()).then((mine) => verifyMismatches(regions, verify!, mine))
            .then((bad) => guard(() => {
              if (failed) return;
              if (bad.length > 0) {
                refuse(`RAM verification failed: guest memory ${bad.slice(0, 8).join(', ')}${bad.length > 8 ? ` and ${bad.length - 8} more 2 MiB ranges` : ''} differs from the source's (hashed at the switch-over); not resuming`);
              }
              socket.resume();
              loaded();
            }), (e: unknown) => guard(() => { throw e; }));
          return;
        }
        checksum.update(r.raw);
        const hadMultifd = multifd !== undefined;
        handle(r);
        if (!hadMultifd && multifd !== undefined) connectChannels(multifd.count);
        if (mainHeldAt !== undefined) socket.pause();
      }
    };

    /**
     * A connection's reads: a RAM record's data straight into guest memory, once everything before it
     * is read and taken. Only a record being applied has a landing (a held multifd channel pulls no
     * record), so no page lands ahead of its turn. Read before the guest runs, and into pages the
     * receiver writes anyway, so nothing else writes them. `readStarts` says whether record starts are
     * read RECORD_START_READ_BYTES at a time (while RAM may still come). The connection sleeps until the
     * rest of the record's data has come (committed; up to READ_WAKE_MAX_BYTES of it).
     */
    const placementFor = (conn: RamConnection, readStarts: () => boolean): ReadPlacement => ({
      next: () => {
        if (failed || handedOver()) return { maxBytes: Infinity };
        const landing = conn.landing;
        if (landing === undefined) return { maxBytes: readStarts() ? RECORD_START_READ_BYTES : Infinity };
        if (conn.reader.pendingBytes === 0 && landing.runSize >= DIRECT_READ_MIN_BYTES) return { view: landing.window() };
        // Scattered pages: the rest of the record's data in one read, and the next record's start.
        return { maxBytes: readStarts() ? landing.dataLeft + RECORD_START_READ_BYTES : Infinity };
      },
      landed: (bytes) => guard(() => {
        const landing = conn.landing;
        if (failed || landing === undefined) return; // given up on: the guest never runs from these bytes
        conn.checksum.update(bytes);
        landing.landed(bytes.length);
        conn.reader.skipBody(bytes.length);
        ramBytesReadDirect += bytes.length;
        if (landing.dataLeft === 0) conn.landing = undefined;
      }),
      // The rest of the RAM record being read: the source writes each record whole (precopy-sender.ts).
      committed: () => (failed || handedOver() ? 0 : Math.max(0, conn.reader.bodyLeft - conn.reader.pendingBytes)),
    });

    const connectChannels = (channels: number) => {
      socket.pause();
      acceptChannels!(channels, CHANNELS_TIMEOUT_MS).then((sockets) => {
        if (failed) {
          sockets.forEach((s) => s.destroy());
          return;
        }
        multifd!.channels = sockets.map((s, index) => ({
          index, socket: s, reader: new RecordReader(RAM_RECORD_SPLIT), checksum: new StreamChecksum(), landing: undefined, named: false, synced: 0, heldAt: undefined,
        }));
        for (const ch of multifd!.channels) {
          readChunks(ch.socket, (chunk, transient) => guard(() => {
            if (failed || handedOver()) return;
            ch.reader.push(chunk, transient);
            try {
              pumpAll();
            } finally {
              ch.reader.retain();
            }
          }), placementFor(ch, () => state === 'ram'));
          ch.socket.on('error', (e) => failWith(new IncomingMigrationError(`multifd channel connection failed: ${connectionErrorText(e, 'source', options.peerTimeoutMs ?? 0)}`)));
          ch.socket.on('close', () => {
            // The source closes its channels once it has committed, maybe before COMMIT arrives here.
            if (!handedOver() && !failed) failWith(new IncomingMigrationError(`a multifd channel connection ended early, in state ${state}: the guest was not resumed`));
          });
        }
        multifd!.ready = true;
        socket.resume();
        guard(pumpAll);
      }, (e: unknown) => guard(() => refuse(`multifd channels did not all connect: ${e instanceof Error ? e.message : String(e)}`)));
    };

    socket.on('error', (e) => {
      if (state === 'committed') return;
      const text = connectionErrorText(e, 'source', options.peerTimeoutMs ?? 0);
      failWith(state === 'loaded' ? noCommit(text) : new IncomingMigrationError(`migration connection failed: ${text}`));
    });
    socket.on('close', () => {
      if (state === 'committed' || failed) return;
      failWith(state === 'loaded' ? noCommit('the connection closed') : new IncomingMigrationError(`the migration stream ended early, in state ${state}: the guest was not resumed`));
    });
    // From SWITCHOVER on, the rest (the last pages, STATE ..., END) in as few reads as may be: it is read
    // while the guest is stopped, and comes in one write or two (precopy-sender.ts, switchOver).
    const mainReadStarts = () => state === 'ram' && !awaitingTail;
    let start: Buffer | undefined = Buffer.alloc(0);
    readChunks(socket, (chunk, transient) => guard(() => {
      if (state === 'committed' || failed) return;
      if (start !== undefined) {
        start = Buffer.concat([start, chunk]);
        if (start.length >= STREAM_START_BYTES) {
          checkStreamStart(start);
          start = undefined;
        }
      }
      reader.push(chunk, transient);
      try {
        pumpAll();
      } finally {
        reader.retain();
      }
      // From SWITCHOVER the source's guest is stopped: its tail is waited for awake, not asleep in the
      // event loop (spinUntilReadable), and so is COMMIT after LOADED, for a shorter while (once this
      // returns, the connection's next read comes at once, in the same turn). COMMIT was waited for
      // asleep while the source read LOADED only an event-loop turn after seeing it (a spinner here
      // then held it up: LOADED to COMMIT took 0.7-1.6 ms in 4 of 11 idle switch-overs, against ~0.2 ms
      // asleep). Now that it reads LOADED at once (readAvailable), idle 1 GiB switch-overs on kvm_pvm,
      // alternated, the source's STOP to COMMIT read here: medians 1.39, 1.35 and 1.05 ms awake
      // against 1.72, 1.56 and 1.13 asleep (15, 15 and 20 runs a side).
      if (failed) return;
      if (awaitingTail && (state === 'ram' || state === 'device')) {
        tracePhase('incoming migration: waiting awake for the tail');
        spinUntilReadable([socket, ...(multifd?.channels.map((c) => c.socket) ?? [])], SWITCHOVER_SPIN_MS);
      } else if (state === 'loaded') {
        spinUntilReadable([socket], COMMIT_SPIN_MS);
      }
    }), placementFor(main, mainReadStarts));
  });
}
