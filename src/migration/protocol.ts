/**
 * The tsvmm migration stream, version 11: one TCP connection, records in both directions.
 *
 *   source                                              destination (tsvmm run --incoming tcp:H:P)
 *     | HEADER  magic "TSVMMIG\0", version, machine shape  |  refuses a shape mismatch before touching
 *     |--------------------------------------------------->|  its guest (REFUSED, then closes)
 *     |                                          ACCEPTED  |  or takes it
 *     |<---------------------------------------------------|
 *     | RAM     pages of pass 1: every page; zero pages as |
 *     |         a flag, never-written ranges as zero runs  |  writes pages into guest RAM (not running)
 *     |--------------------------------------------------->|
 *     | PASS_END 1                                         |
 *     |<---------------------------------------------------|  APPLIED 1 once pass 1 is in guest RAM
 *     | RAM ... PASS_END n   pages dirtied since last sync |
 *     |--------------------------------------------------->|
 *     |                                         APPLIED n  |
 *     |<---------------------------------------------------|
 *     |   [source waits for APPLIED of its last pass]      |
 *     |   [source pauses vCPUs, only once it has ACCEPTED] |
 *     | SWITCHOVER  the guest has stopped; the rest follows|  waits for it awake (spinUntilReadable)
 *     |   [final sync]                                     |
 *     | RAM ... PASS_END last                              |  with VERIFY announced: hashes its RAM
 *     | STATE   "vm", "vcpu0".., "uart": named, versioned  |  held until END checks out
 *     | VERIFY  XXH3 of each 2 MiB of RAM (if x-verify)    |
 *     | END     byte count and XXH3 of everything before   |
 *     |--------------------------------------------------->|  checks END, loads state, checks VERIFY
 *     |                    LOADED | REFUSED "reason"       |
 *     |<---------------------------------------------------|
 *     | COMMIT  the source will never run the guest again  |
 *     |--------------------------------------------------->|  resumes the guest only after COMMIT
 *   On LOADED the source commits: it sends COMMIT and quits, and its guest never runs again. On
 *   anything else (REFUSED, a closed or failed connection, cancel) it resumes its own guest: nothing
 *   is lost until the destination has everything. The destination runs the guest only once COMMIT
 *   has come, so the two never both run it: without COMMIT, a connection lost (or a cancel taken)
 *   after the destination sent LOADED and before the source read it left the guest running on both.
 *   If the connection dies after the source commits and before COMMIT arrives, neither runs it (as
 *   with QEMU, whose source counts a migration complete once it has written the stream): a
 *   destination that sent LOADED and got no COMMIT says so, and does not guess.
 *
 * Multifd (capability multifd, multifd-channels N): right after HEADER the source sends MULTIFD (N, a
 * random 16-byte session) and opens N more connections to the same address, each starting with
 * CHANNEL (session, index). RAM records then travel over the channels, not the main connection; at
 * the end of each pass every channel sends SYNC (pass, its byte count and running XXH3) before the
 * main connection's PASS_END. The destination applies no page of pass n+1 from any channel, and no
 * record after PASS_END n from the main connection, before every channel has delivered SYNC n: a page
 * resent in a later pass over another channel can never be overtaken by its older copy.
 *
 * Each record: u8 type, u32 payload length (little-endian), payload. Integers are little-endian.
 */

export const STREAM_MAGIC = Buffer.from('TSVMMIG\0', 'latin1');
/**
 * 11: VERIFY carries XXH3-64 of each 2 MiB of RAM, where version 10 carried SHA-256; SWITCHOVER
 * carries a u8 that says whether VERIFY follows, where version 10's was empty.
 * 10: the destination answers each PASS_END before SWITCHOVER with APPLIED once it has applied that
 * pass, and the source switches over only after the APPLIED of its last live pass.
 * 9: a RAM record carries its data pages together after its entries (with their count up front),
 * where version 8 put each page after its entry: a destination reads them into guest RAM directly.
 * 8: SWITCHOVER announces the switch-over once the source's guest has stopped; a vCPU's STATE is
 * version 2 (no fpu).
 * 7: END and SYNC carry XXH3-64, where versions 3 to 6 carried XXH64.
 * 6: the source answers LOADED with COMMIT, and the destination runs the guest only after it.
 * 5: the destination answers a HEADER it takes with ACCEPTED, and LOADED is valid only after it.
 * 4: STATE carries its byte arrays (registers, XSAVE, LAPIC, irqchips...) raw after its JSON, where
 * version 3 put them in the JSON as base64.
 * 3: END and SYNC carry XXH64 (StreamChecksum), where version 2 carried CRC-32C and version 1 SHA-1;
 * RAM records may hold ZERO_RUN entries (a whole never-written range in 9 bytes).
 */
export const STREAM_VERSION = 11;
/**
 * How many times the switch-over's encoding (PrecopySender.rehearseSwitchOverEncoding) and decoding
 * (rehearseTailDecoding) run on sample state before a migration needs them. That code runs once per
 * migration, in the guest's downtime, and V8 gives a function inline caches only after several calls
 * and compiles it out of its interpreter later still: rehearsed once, it ran cold. On kvm_pvm, idle
 * 1 GiB switch-overs, alternated, medians: the source's STOP to the destination's COMMIT read took
 * 2.17 ms without these rounds and 1.33 ms with them (25 runs a side), 2.29 and 1.74 ms (20 more); the
 * destination's decoding, END check and restore 0.51-0.70 ms against 0.32-0.39. The source's rounds
 * add to the migration's total time (10 took ~2 ms), the destination's are run while it waits for its
 * source to connect (200 took ~30 ms); 30 source rounds did no better than 10.
 */
export const SWITCHOVER_ENCODING_ROUNDS = 10;
/** The destination's rounds of the tail's decoding (see SWITCHOVER_ENCODING_ROUNDS). */
export const TAIL_DECODING_ROUNDS = 200;
export const PAGE_BYTES = 4096;
export const RECORD_HEADER_BYTES = 5;
/** No record of version 11 is larger (a RAM batch of 768 pages, ram-record.ts, is ~3 MiB). */
export const MAX_RECORD_BYTES = 4 * 1024 * 1024;

export const RecordType = {
  HEADER: 1,
  RAM: 2,
  PASS_END: 3,
  STATE: 4,
  VERIFY: 5,
  END: 6,
  /** Main connection, right after HEADER: RAM also comes over this many channel connections. */
  MULTIFD: 7,
  /** First record of a channel connection: which migration (session) and which channel. */
  CHANNEL: 8,
  /** On a channel: every page of pass N this channel carries has been sent; with its running count and XXH3. */
  SYNC: 9,
  /** Main connection, the source's answer to LOADED: it has handed the guest over and will never run it again. */
  COMMIT: 10,
  /**
   * Main connection, a u8 (1: VERIFY follows, 0: it does not): the source's guest has stopped, and the
   * last pages, PASS_END, STATE, VERIFY (if announced) and END follow as soon as it has captured the
   * device state. The destination wakes now, while the source syncs and captures, and waits for them
   * awake, not asleep (transport.ts, spinUntilReadable). With VERIFY announced, it hashes its RAM once
   * the last pass is in, while the source hashes its own.
   */
  SWITCHOVER: 11,
  LOADED: 0x80,
  REFUSED: 0x81,
  /**
   * Destination -> source, right after a HEADER it takes. Besides telling the source early, it runs
   * both ends' code for records going back (a write here, a read there) long before the switch-over,
   * where that code's first run cost milliseconds of downtime in nested KVM.
   */
  ACCEPTED: 0x82,
  /**
   * Destination -> source, u32 n: every record up to the main connection's PASS_END n, and with
   * multifd every channel's SYNC n, has been applied; for each PASS_END before SWITCHOVER. The source
   * pauses its guest only once the destination has applied every live pass (or has waited
   * CATCH_UP_MAX_MS for it): what the destination still holds in its socket buffers when the guest
   * stops is downtime too.
   */
  APPLIED: 0x83,
} as const;
export type RecordTypeValue = (typeof RecordType)[keyof typeof RecordType];

export function recordName(type: number): string {
  for (const [name, value] of Object.entries(RecordType)) if (value === type) return name;
  return `unknown record type ${type}`;
}

/** A malformed or unexpected stream; the message says what arrived and in which state. */
export class MigrationStreamError extends Error {
  override name = 'MigrationStreamError';
}

/** What must match between source and destination (the VM's "machine shape"). */
export interface MachineShape {
  readonly memBytes: number;
  readonly cpus: number;
  readonly regions: readonly { start: number; sizeBytes: number }[];
  readonly devices: readonly string[];
}

/** Differences between two shapes, worded for the user of the destination; empty when they match. */
export function shapeMismatch(source: MachineShape, dest: MachineShape): string[] {
  const problems: string[] = [];
  if (source.memBytes !== dest.memBytes) problems.push(`the source has ${source.memBytes} bytes of RAM and this VM ${dest.memBytes}: start it with --mem ${source.memBytes / 1048576}M`);
  if (source.cpus !== dest.cpus) problems.push(`the source has ${source.cpus} vCPUs and this VM ${dest.cpus}: start it with --cpus ${source.cpus}`);
  if (JSON.stringify(source.regions) !== JSON.stringify(dest.regions) && source.memBytes === dest.memBytes) problems.push('the RAM layouts differ');
  if (JSON.stringify(source.devices) !== JSON.stringify(dest.devices)) problems.push(`the devices differ (source: ${source.devices.join(', ')}; here: ${dest.devices.join(', ')})`);
  return problems;
}

export function record(type: RecordTypeValue, payload: Uint8Array): Buffer {
  const b = Buffer.allocUnsafe(RECORD_HEADER_BYTES + payload.length);
  b.writeUInt8(type, 0);
  b.writeUInt32LE(payload.length, 1);
  b.set(payload, RECORD_HEADER_BYTES);
  return b;
}

export function headerRecord(shape: MachineShape): Buffer {
  const json = Buffer.from(JSON.stringify(shape));
  const p = Buffer.alloc(8 + 4 + json.length);
  STREAM_MAGIC.copy(p, 0);
  p.writeUInt32LE(STREAM_VERSION, 8);
  json.copy(p, 12);
  return record(RecordType.HEADER, p);
}

/** Bytes a receiver needs to tell a tsvmm stream from anything else: a record header and the magic. */
export const STREAM_START_BYTES = RECORD_HEADER_BYTES + STREAM_MAGIC.length;

/**
 * Checks the first STREAM_START_BYTES of a stream before any record is parsed, so that a stranger
 * (an HTTP probe, random bytes, a QEMU stream) is named as such rather than as a corrupt record.
 */
export function checkStreamStart(start: Buffer): void {
  if (start.readUInt8(0) !== RecordType.HEADER || !start.subarray(RECORD_HEADER_BYTES, STREAM_START_BYTES).equals(STREAM_MAGIC)) {
    throw new MigrationStreamError(NOT_A_STREAM);
  }
}

const NOT_A_STREAM = 'not a tsvmm migration stream (bad magic): is the sender a tsvmm of this project?';

export function parseHeader(payload: Buffer): MachineShape {
  if (payload.length < 12 || !payload.subarray(0, 8).equals(STREAM_MAGIC)) {
    throw new MigrationStreamError(NOT_A_STREAM);
  }
  const version = payload.readUInt32LE(8);
  if (version !== STREAM_VERSION) throw new MigrationStreamError(`migration stream version ${version} is not supported (this tsvmm reads version ${STREAM_VERSION})`);
  try {
    return JSON.parse(payload.subarray(12).toString()) as MachineShape;
  } catch {
    throw new MigrationStreamError('migration header carries a machine shape that is not valid JSON');
  }
}

/** A RAM record entry's kind: DATA carries the page, ZERO nothing, ZERO_RUN a u32 count of zero pages from it. */
export const PageKind = { DATA: 0, ZERO: 1, ZERO_RUN: 2 } as const;

/** SWITCHOVER, saying whether VERIFY follows in the tail. */
export function switchoverRecord(verifyFollows: boolean): Buffer {
  return record(RecordType.SWITCHOVER, Uint8Array.of(verifyFollows ? 1 : 0));
}

/** Whether a SWITCHOVER announces VERIFY; throws MigrationStreamError on any payload but one byte of 0 or 1. */
export function parseSwitchover(payload: Buffer): { verifyFollows: boolean } {
  if (payload.length !== 1 || payload[0]! > 1) throw new MigrationStreamError(`SWITCHOVER record of ${payload.length} bytes${payload.length === 1 ? ` (${payload[0]})` : ''}: it carries one byte, 0 or 1`);
  return { verifyFollows: payload[0] === 1 };
}

export function u32Record(type: RecordTypeValue, value: number): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt32LE(value, 0);
  return record(type, p);
}

/** The END record: u64 byte count and u64 XXH3-64 of every byte the source sent before it. */
export function endRecord(bytesBefore: number, hash: bigint): Buffer {
  const p = Buffer.alloc(8 + 8);
  p.writeBigUInt64LE(BigInt(bytesBefore), 0);
  p.writeBigUInt64LE(hash, 8);
  return record(RecordType.END, p);
}

export function parseEnd(payload: Buffer): { bytesBefore: number; hash: bigint } {
  if (payload.length !== 16) throw new MigrationStreamError(`END record of ${payload.length} bytes`);
  return { bytesBefore: Number(payload.readBigUInt64LE(0)), hash: payload.readBigUInt64LE(8) };
}
