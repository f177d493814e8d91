/**
 * The receiver's connections that carry RAM records (the main one, and multifd channels), and the
 * multifd side of an incoming migration: the session's channels, each one's records, and the barrier
 * that keeps a page of pass n+1 from being applied before every channel has delivered pass n
 * (protocol.ts, multifd). receiveMigration (incoming.ts) drives them.
 */
import type { Socket } from 'node:net';
import { parseChannel, parseSync } from './multifd.js';
import { RecordType } from './protocol.js';
import type { RamRecordLanding } from './ram-record.js';
import type { ReadRecord, RecordReader } from './record-reader.js';
import type { StreamChecksum } from './stream-checksum.js';

/** A connection that carries RAM records, as the receiver reads it: the main one, or a multifd channel. */
export interface RamConnection {
  readonly reader: RecordReader;
  readonly checksum: StreamChecksum;
  /** The RAM record whose data is still coming, if any. */
  landing: RamRecordLanding | undefined;
}

/** One multifd channel connection as the receiver tracks it. */
export interface ChannelIn extends RamConnection {
  readonly index: number;
  readonly socket: Socket;
  named: boolean;
  /** The last pass this channel has delivered SYNC for. */
  synced: number;
  /** Set after SYNC n: nothing more from this channel is applied until every channel has SYNC n. */
  heldAt: number | undefined;
}

/**
 * Takes the data of `conn`'s current RAM record that its reader holds, into guest memory and the
 * checksum; returns whether all of it is in (and then the record is done).
 */
export function takeData(conn: RamConnection): boolean {
  const landing = conn.landing!;
  for (let b = conn.reader.takeBody(); b !== undefined; b = conn.reader.takeBody()) {
    conn.checksum.update(b);
    landing.write(b);
  }
  if (landing.dataLeft > 0) return false;
  conn.landing = undefined;
  return true;
}

/** What the channels need of the receiver that owns them: plain functions, called unbound. */
export interface ChannelsReceiver {
  /** Tells the source why and abandons the stream (throws). */
  readonly refuse: (message: string) => never;
  /** refuse() for a record that does not belong where it came (throws). */
  readonly unexpected: (type: number, where?: string) => never;
  /** Whether RAM records are taken now (the receiver's state is 'ram'). */
  readonly takesRam: () => boolean;
  /** The landing of a RAM record whose fixed part is `payload` and whose data (`body` bytes) follows. */
  readonly landing: (payload: Buffer, body: number) => RamRecordLanding;
}

/** The multifd channels of one incoming migration, announced by its MULTIFD record. */
export class IncomingChannels {
  /** Empty until every channel connection has come (then `ready`). */
  channels: ChannelIn[] = [];
  ready = false;
  private readonly announced = new Set<number>();

  constructor(readonly session: Buffer, readonly count: number, private readonly receiver: ChannelsReceiver) {}

  /** Every channel has connected and delivered SYNC `pass`. */
  allSynced(pass: number): boolean {
    return this.ready && this.channels.every((c) => c.synced >= pass);
  }

  /**
   * Applies every record channel `ch` may apply now, stopping at its barrier (SYNC n: held until every
   * channel has it), or when `stopped` says the migration no longer reads. Returns whether the
   * barrier moved, so that the other connections, waiting on it too, should be pumped again.
   */
  pump(ch: ChannelIn, stopped: () => boolean): boolean {
    let moved = false;
    while (!stopped()) {
      if (ch.heldAt !== undefined) {
        if (!this.allSynced(ch.heldAt)) return moved;
        ch.heldAt = undefined;
        ch.socket.resume();
        moved = true;
      }
      if (ch.landing !== undefined && !takeData(ch)) return moved;
      const r = ch.reader.next();
      if (r === undefined) return moved;
      this.handle(ch, r);
      if (ch.heldAt !== undefined) {
        ch.socket.pause();
        moved = true;
      }
    }
    return moved;
  }

  /** Applies one channel record; after a SYNC the channel is held (heldAt) until every channel has it. */
  private handle(ch: ChannelIn, r: ReadRecord): void {
    const { refuse, unexpected } = this.receiver;
    if (!ch.named) {
      if (r.type !== RecordType.CHANNEL) unexpected(r.type, ` first on multifd channel connection ${ch.index}`);
      const { session, index } = parseChannel(r.payload);
      if (!session.equals(this.session)) refuse('a multifd channel connection belongs to another migration (session mismatch)');
      if (this.announced.has(index) || index >= this.channels.length) refuse(`multifd channel index ${index} repeated or out of range`);
      this.announced.add(index);
      ch.named = true;
    } else if (r.type === RecordType.RAM) {
      if (!this.receiver.takesRam()) unexpected(r.type, ` on multifd channel ${ch.index}`);
      ch.landing = this.receiver.landing(r.payload, r.body);
    } else if (r.type === RecordType.SYNC) {
      const { pass, bytesBefore, hash } = parseSync(r.payload);
      if (!ch.checksum.matches(bytesBefore, hash)) refuse(`multifd channel ${ch.index} is corrupt: its SYNC ${pass} checksum does not match what arrived`);
      if (pass !== ch.synced + 1) refuse(`multifd channel ${ch.index} sent SYNC ${pass} after SYNC ${ch.synced}`);
      ch.synced = pass;
      ch.heldAt = pass;
    } else unexpected(r.type, ` on multifd channel ${ch.index}`);
    ch.checksum.update(r.raw);
  }
}
