/** Reading the migration stream (protocol.ts) back into records, as its bytes arrive. */
import { MAX_RECORD_BYTES, MigrationStreamError, RECORD_HEADER_BYTES, recordName } from './protocol.js';

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
