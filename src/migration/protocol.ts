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
 *     |   [source pauses vCPUs]                            |
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

import { xxh3Of } from './stream-checksum.js';

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

/** State records hold JSON in which byte arrays are {"b64": "..."}. */
/**
 * A STATE record: u16 name length, the name, u32 JSON length, the state as JSON with each byte array
 * (Uint8Array) replaced by {"$bytes": i}, then u32 count and, for each array i, u32 length and its
 * bytes. Binary state goes as it is: as base64 inside the JSON (version 3), encoding one VM's state
 * took 3.5-21 ms and parsing it 2.8-15 ms in nested KVM, against 1.7-10 ms for capturing it, all of it
 * downtime.
 */
export function stateRecord(name: string, state: unknown): Buffer {
  const arrays: Uint8Array[] = [];
  const json = JSON.stringify(replaceByteArrays(state, (a) => ({ $bytes: arrays.push(a) - 1 })));
  const nameBytes = Buffer.from(name);
  const jsonBytes = Buffer.byteLength(json);
  const p = Buffer.allocUnsafe(2 + nameBytes.length + 4 + jsonBytes + 4 + arrays.reduce((n, a) => n + 4 + a.length, 0));
  let at = p.writeUInt16LE(nameBytes.length, 0);
  at += nameBytes.copy(p, at);
  at = p.writeUInt32LE(jsonBytes, at);
  at += p.write(json, at);
  at = p.writeUInt32LE(arrays.length, at);
  for (const a of arrays) {
    at = p.writeUInt32LE(a.length, at);
    p.set(a, at);
    at += a.length;
  }
  return record(RecordType.STATE, p);
}

/**
 * A STATE record encoded once, from `sample`, with `state` a copy of the sample whose byte arrays are
 * views into the record's own bytes: reading new state into those arrays in place
 * (captureVcpuStateInto, captureVmKernelStateInto) leaves `record` equal to stateRecord(name, state)
 * with nothing left to encode. A switch-over builds its templates before it pauses the guest and
 * fills them in the pause: on kvm_pvm, cold, encoding the VM's and a vCPU's pieces took ~0.05 ms of
 * the downtime, and their capture into fresh arrays ~0.08 ms more than into these (medians of 25).
 * INVARIANT: only the arrays' contents change, never their lengths nor any other field of `state`.
 */
export function stateRecordTemplate<T>(name: string, sample: T): { readonly record: Buffer; readonly state: T } {
  const record = stateRecord(name, sample);
  const views = stateParts(record.subarray(RECORD_HEADER_BYTES)).arrays;
  let next = 0;
  // The same walk as stateRecord's, so the i-th array met is the record's i-th.
  return { record, state: replaceByteArrays(sample, () => views[next++]) as T };
}

/**
 * `value` with every Uint8Array in it replaced by what `replace` gives for it, the arrays met in one
 * fixed order (depth first, keys in their own order): stateRecord's and stateRecordTemplate's walk.
 */
function replaceByteArrays(value: unknown, replace: (array: Uint8Array) => unknown): unknown {
  if (value instanceof Uint8Array) return replace(value);
  if (Array.isArray(value)) return value.map((v) => replaceByteArrays(v, replace));
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = replaceByteArrays(v, replace);
    return out;
  }
  return value;
}

/** The reverse of stateRecord's {$bytes: i} placeholders; each array is copied out of the record (whose bytes are reused). */
function withByteArrays(value: unknown, arrays: readonly Buffer[]): unknown {
  if (Array.isArray(value)) return value.map((v) => withByteArrays(v, arrays));
  if (value !== null && typeof value === 'object') {
    const index = (value as { $bytes?: unknown }).$bytes;
    if (index !== undefined) {
      if (typeof index !== 'number' || arrays[index] === undefined) throw new MigrationStreamError(`STATE record names byte array ${String(index)}, which it does not carry`);
      return new Uint8Array(arrays[index]!);
    }
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = withByteArrays(v, arrays);
    return out;
  }
  return value;
}

export function parseState(payload: Buffer): { name: string; state: unknown } {
  const { name, jsonText, arrays } = stateParts(payload);
  let parsed: unknown;
  try {
    parsed = JSON.parse(jsonText);
  } catch {
    throw new MigrationStreamError(`STATE record "${name}" is not valid JSON`);
  }
  return { name, state: withByteArrays(parsed, arrays) };
}

/** A STATE record's payload cut into its name, its JSON text and its byte arrays (views of `payload`), checked for length. */
function stateParts(payload: Buffer): { name: string; jsonText: string; arrays: Buffer[] } {
  const truncated = (what: string) => new MigrationStreamError(`STATE record cut short in its ${what}`);
  if (payload.length < 2) throw truncated('name');
  const nameLength = payload.readUInt16LE(0);
  let at = 2 + nameLength;
  if (at + 4 > payload.length) throw truncated('name');
  const name = payload.subarray(2, at).toString();
  const jsonLength = payload.readUInt32LE(at);
  at += 4;
  if (at + jsonLength + 4 > payload.length) throw new MigrationStreamError(`STATE record "${name}" cut short in its JSON`);
  const jsonText = payload.subarray(at, at + jsonLength).toString();
  at += jsonLength;
  const count = payload.readUInt32LE(at);
  at += 4;
  const arrays: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    if (at + 4 > payload.length) throw new MigrationStreamError(`STATE record "${name}" cut short in its byte arrays`);
    const length = payload.readUInt32LE(at);
    at += 4;
    if (at + length > payload.length) throw new MigrationStreamError(`STATE record "${name}" cut short in its byte arrays`);
    arrays.push(payload.subarray(at, at + length));
    at += length;
  }
  if (at !== payload.length) throw new MigrationStreamError(`STATE record "${name}" is longer than its contents`);
  return { name, jsonText, arrays };
}

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

/** Bytes of RAM per verify hash: a mismatch is reported to this granularity. */
export const VERIFY_CHUNK_BYTES = 2 * 1024 * 1024;

/** Chunks hashed between two turns of the event loop (hashRegions): 64 MiB, a few milliseconds. */
const VERIFY_YIELD_CHUNKS = 32;

/**
 * XXH3-64 of every 2 MiB of each RAM region, hex: the seed's md5 check, built in, and precise. It
 * finds RAM that differs by accident (the 2015 bug lost pages), as the stream's checksum finds bytes
 * garbled on the way; a source that lies could send any RAM, and keeping it out is TLS's job. Both
 * sides hash in the guest's pause: with SHA-256 (stream version 10) a verified 1 GiB migration
 * stopped the guest for 1.54-1.59 s on kvm_pvm, against a few milliseconds without verify.
 * Yields to the event loop every VERIFY_YIELD_CHUNKS chunks: QMP (query-migrate, migrate_cancel) keeps
 * answering while gigabytes are hashed.
 * A chunk `zeroChunks` says is zero (GuestMemory.knownZeroChunks) is not read: its hash is that of
 * zeros. Reading RAM the guest never wrote cost ~45-55 ms per GiB, and an idle 4 GiB guest's verified
 * migration stopped it for ~210 ms.
 */
export async function hashRegions(
  regions: readonly { bytes: Uint8Array }[],
  options: {
    /** Checked at each turn of the event loop: true stops the hashing (what it returns is then partial). */
    readonly stop?: () => boolean;
    /** Per region, one byte per VERIFY_CHUNK_BYTES: 1 where the chunk is known to be all zero. */
    readonly zeroChunks?: readonly Uint8Array[];
  } = {},
): Promise<string[][]> {
  const all: string[][] = [];
  const zeroHashes = new Map<number, string>();
  const hexOf = (bytes: Uint8Array) => xxh3Of(bytes).toString(16).padStart(16, '0');
  for (let i = 0; i < regions.length; i++) {
    const r = regions[i]!;
    const zero = options.zeroChunks?.[i];
    const hashes: string[] = [];
    for (let at = 0; at < r.bytes.length; at += VERIFY_CHUNK_BYTES) {
      const bytes = Math.min(VERIFY_CHUNK_BYTES, r.bytes.length - at);
      if (zero?.[at / VERIFY_CHUNK_BYTES] === 1) {
        let h = zeroHashes.get(bytes);
        if (h === undefined) zeroHashes.set(bytes, (h = hexOf(new Uint8Array(bytes))));
        hashes.push(h);
        continue;
      }
      hashes.push(hexOf(r.bytes.subarray(at, at + bytes)));
      if (hashes.length % VERIFY_YIELD_CHUNKS === 0) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        if (options.stop?.() === true) return all;
      }
    }
    all.push(hashes);
  }
  return all;
}

/** The guest ranges whose hashes differ ('0x200000-0x3fffff'), or [] when all match. */
export function verifyMismatches(regions: readonly { start: number; sizeBytes: number }[], source: string[][], mine: string[][]): string[] {
  const bad: string[] = [];
  regions.forEach((r, i) => {
    const a = source[i] ?? [];
    const b = mine[i] ?? [];
    for (let c = 0; c < Math.max(a.length, b.length); c++) {
      if (a[c] !== b[c]) {
        const from = r.start + c * VERIFY_CHUNK_BYTES;
        bad.push(`0x${from.toString(16)}-0x${(Math.min(from + VERIFY_CHUNK_BYTES, r.start + r.sizeBytes) - 1).toString(16)}`);
      }
    }
  });
  return bad;
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

/**
 * Records of one type whose payload ends in a body that a reader hands over apart from the rest, in
 * pieces, as it arrives (RecordReader.takeBody): a RAM record's data pages, which go to guest memory
 * and need never be assembled in a buffer of ours (ram-record.ts).
 */
export interface RecordSplit {
  readonly type: number;
  /** Bytes at the start of the payload that say how long the body is. */
  readonly fixedBytes: number;
  /** Bytes of body at the end of a payload whose first fixedBytes bytes are `fixed`. */
  bodyBytes(fixed: Buffer): number;
}

/** A record from RecordReader.next(): `raw` is its header and payload, without the body of a split record. */
export interface ReadRecord {
  readonly type: number;
  readonly payload: Buffer;
  readonly raw: Buffer;
  /** Bytes of body that follow (a split record's), to be taken with takeBody before the next record; else 0. */
  readonly body: number;
}

/**
 * Splits a byte stream into records. Feed chunks as they arrive; `next()` returns complete records
 * in order, or undefined until more bytes come. A length over MAX_RECORD_BYTES is refused at once
 * (random bytes at the port must not make us buffer gigabytes). With a RecordSplit, a record of its
 * type comes out as soon as everything before its body is here, and the body then in pieces.
 */
export class RecordReader {
  constructor(private readonly split?: RecordSplit) {}

  private chunks: Buffer[] = [];
  /** Bytes of the current split record's body not yet taken (takeBody) or skipped (skipBody). */
  private bodyToCome = 0;
  private buffered = 0;
  /**
   * Where a record that spans chunks is put together, reused from one such record to the next: a fresh
   * buffer per record costs a page fault per 4 KiB, which under nested KVM on TCG made this copy the
   * destination's largest cost (bench/migrate, --cpu-prof).
   */
  private assembly = Buffer.alloc(0);
  /** Where peek() puts together a record's first bytes when they span chunks. */
  private readonly head = Buffer.alloc(64);

  /** The memory of the last chunk pushed as transient, until retain(). */
  private transient: ArrayBufferLike | undefined;

  /**
   * Feeds the next chunk. A `transient` chunk lies in a read buffer its owner reuses once the call
   * that pushed it returns (transport.ts, bulkReads): records are read from it in place, and retain()
   * must be called before that return.
   */
  push(chunk: Buffer, transient = false): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    if (transient) this.transient = chunk.buffer;
  }

  /**
   * Where retain() keeps unread bytes, reused like `assembly` (a fresh buffer per read would cost a
   * page fault per 4 KiB: on this host, 0.7 s of a 512 MiB stream, bench/migrate-stream --cpu-prof).
   */
  private carry = Buffer.alloc(0);

  /**
   * Copies the unread bytes of the transient chunk (and any other not in the carry) into the carry
   * buffer, after the unread bytes already there, before the transient memory is reused. Each byte
   * is copied in once; bytes already in the carry move only when it must be compacted to make room.
   * INVARIANT: unread bytes in the carry, if any, are the first chunk (retain() leaves exactly one).
   */
  retain(): void {
    if (this.transient === undefined) return;
    this.transient = undefined;
    const first = this.chunks[0];
    const inCarry = first !== undefined && first.buffer === this.carry.buffer;
    let a = inCarry ? first.byteOffset - this.carry.byteOffset : 0;
    let b = inCarry ? a + first.length : 0;
    const restBytes = this.buffered - (b - a);
    if (b + restBytes > this.carry.length) {
      if (this.buffered <= this.carry.length) {
        this.carry.copyWithin(0, a, b);
      } else {
        const bigger = Buffer.allocUnsafe(Math.max(this.buffered, 2 * this.carry.length));
        bigger.set(this.carry.subarray(a, b), 0);
        this.carry = bigger;
      }
      b -= a;
      a = 0;
    }
    for (let i = inCarry ? 1 : 0; i < this.chunks.length; i++) {
      this.carry.set(this.chunks[i]!, b);
      b += this.chunks[i]!.length;
    }
    this.chunks = b > a ? [this.carry.subarray(a, b)] : [];
  }

  get pendingBytes(): number {
    return this.buffered;
  }

  /**
   * The next complete record (a split record without its body), or undefined until more bytes come.
   * Its bytes stay valid only until the next call: they may lie in the reader's reused assembly
   * buffer. Copy what must live longer. Not to be called while a body is still to come (bodyLeft).
   */
  next(): ReadRecord | undefined {
    if (this.bodyToCome > 0) throw new Error(`RecordReader.next() with ${this.bodyToCome} bytes of a record's body not taken`);
    if (this.buffered < RECORD_HEADER_BYTES) return undefined;
    let head = this.peek(RECORD_HEADER_BYTES);
    const type = head.readUInt8(0);
    const length = head.readUInt32LE(1);
    if (length > MAX_RECORD_BYTES) {
      throw new MigrationStreamError(`record of ${length} bytes (type ${type}) is larger than any valid record: the stream is corrupt or not a tsvmm migration`);
    }
    let body = 0;
    if (this.split !== undefined && type === this.split.type && length >= this.split.fixedBytes) {
      if (this.buffered < RECORD_HEADER_BYTES + this.split.fixedBytes) return undefined;
      head = this.peek(RECORD_HEADER_BYTES + this.split.fixedBytes);
      body = this.split.bodyBytes(head.subarray(RECORD_HEADER_BYTES));
      if (body > length - this.split.fixedBytes) {
        throw new MigrationStreamError(`${recordName(type)} record of ${length} bytes says it carries ${body} bytes after its first ${this.split.fixedBytes}`);
      }
    }
    if (this.buffered < RECORD_HEADER_BYTES + length - body) return undefined;
    const raw = this.take(RECORD_HEADER_BYTES + length - body);
    this.bodyToCome = body;
    return { type, payload: raw.subarray(RECORD_HEADER_BYTES), raw, body };
  }

  /** Bytes of the last record's body still to come: taken with takeBody, or skipped with skipBody. */
  get bodyLeft(): number {
    return this.bodyToCome;
  }

  /**
   * The next bytes of the current body that are here (a view valid as the records of next() are),
   * or undefined when none are.
   */
  takeBody(): Buffer | undefined {
    if (this.bodyToCome === 0 || this.buffered === 0) return undefined;
    const first = this.chunks[0]!;
    const n = Math.min(first.length, this.bodyToCome);
    this.bodyToCome -= n;
    return this.take(n);
  }

  /**
   * `n` bytes of the current body came another way, never pushed here (a read straight into their
   * destination): possible only while nothing is buffered, since buffered bytes come first.
   */
  skipBody(n: number): void {
    if (this.buffered > 0 || n > this.bodyToCome) throw new Error(`RecordReader.skipBody(${n}) with ${this.buffered} bytes buffered and ${this.bodyToCome} of the body to come`);
    this.bodyToCome -= n;
  }

  /** The first n <= min(buffered, head.length) bytes, without consuming them. */
  private peek(n: number): Buffer {
    if (this.chunks[0]!.length >= n) return this.chunks[0]!.subarray(0, n);
    let filled = 0;
    for (let i = 0; filled < n; i++) {
      const c = this.chunks[i]!;
      const k = Math.min(c.length, n - filled);
      this.head.set(c.subarray(0, k), filled);
      filled += k;
    }
    return this.head.subarray(0, n);
  }

  /** Consumes n <= buffered bytes: a view of the first chunk when it holds them all, else the assembly buffer. */
  private take(n: number): Buffer {
    const first = this.chunks[0]!;
    this.buffered -= n;
    if (first.length >= n) {
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    if (this.assembly.length < n) this.assembly = Buffer.allocUnsafe(Math.max(n, Math.min(2 * this.assembly.length, RECORD_HEADER_BYTES + MAX_RECORD_BYTES)));
    let filled = 0;
    while (filled < n) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length, n - filled);
      this.assembly.set(k === c.length ? c : c.subarray(0, k), filled);
      filled += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    return this.assembly.subarray(0, n);
  }
}
