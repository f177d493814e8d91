import { MigrationStreamError, record, RecordType } from './protocol.js';

/** Bytes of the random session id that ties channel connections to their main connection. */
export const SESSION_BYTES = 16;
/**
 * How long a destination waits for every channel connection after MULTIFD. The source starts its
 * channel threads before it sends MULTIFD (MultifdChannels.open), so this covers connects and TLS
 * handshakes only, on a host that may be slow (nested KVM).
 */
export const CHANNELS_TIMEOUT_MS = 30_000;

export function multifdRecord(channels: number, session: Uint8Array): Buffer {
  const p = Buffer.alloc(4 + SESSION_BYTES);
  p.writeUInt32LE(channels, 0);
  p.set(session, 4);
  return record(RecordType.MULTIFD, p);
}

export function parseMultifd(payload: Buffer): { channels: number; session: Buffer } {
  if (payload.length !== 4 + SESSION_BYTES) throw new MigrationStreamError(`MULTIFD record of ${payload.length} bytes`);
  const channels = payload.readUInt32LE(0);
  if (channels < 1 || channels > 255) throw new MigrationStreamError(`MULTIFD record asks for ${channels} channels (1 to 255)`);
  return { channels, session: payload.subarray(4) };
}

export function channelRecord(session: Uint8Array, index: number): Buffer {
  const p = Buffer.alloc(SESSION_BYTES + 4);
  p.set(session, 0);
  p.writeUInt32LE(index, SESSION_BYTES);
  return record(RecordType.CHANNEL, p);
}

export function parseChannel(payload: Buffer): { session: Buffer; index: number } {
  if (payload.length !== SESSION_BYTES + 4) throw new MigrationStreamError(`CHANNEL record of ${payload.length} bytes`);
  return { session: payload.subarray(0, SESSION_BYTES), index: payload.readUInt32LE(SESSION_BYTES) };
}

/** SYNC: u32 pass, u64 bytes this channel sent before this record, u64 XXH3-64 of those bytes. */
export function syncRecord(pass: number, bytesBefore: number, hash: bigint): Buffer {
  const p = Buffer.alloc(4 + 8 + 8);
  p.writeUInt32LE(pass, 0);
  p.writeBigUInt64LE(BigInt(bytesBefore), 4);
  p.writeBigUInt64LE(hash, 12);
  return record(RecordType.SYNC, p);
}

export function parseSync(payload: Buffer): { pass: number; bytesBefore: number; hash: bigint } {
  if (payload.length !== 20) throw new MigrationStreamError(`SYNC record of ${payload.length} bytes`);
  return { pass: payload.readUInt32LE(0), bytesBefore: Number(payload.readBigUInt64LE(4)), hash: payload.readBigUInt64LE(12) };
}
