import { gpa } from '../arch/x86/layout.js';
import type { GuestMemory, GuestWriteLease } from '../memory/guest-memory.js';
import type { PageRange } from '../memory/dirty-bitmap.js';
import { addon } from '../kvm/addon.js';
import { MigrationStreamError, PAGE_BYTES, PageKind, RECORD_HEADER_BYTES, RecordType } from './protocol.js';
import type { RecordSplit } from './record-reader.js';

/**
 * Pages per RAM record: 3 MiB of data, the most under MAX_RECORD_BYTES in whole 256-page steps. The
 * JavaScript around each record (encode, checksum, write, yield) costs about the same whatever its
 * size, and in a migration it runs a few hundred times, too few to be optimized: a 1 GiB full-RAM
 * migration took a median 349 ms with 768 pages, 448 ms with 256 (8 alternated runs each, kvm_pvm).
 */
export const BATCH_PAGES = 768;

/** Bytes of a RAM payload before its entries: u32 region, u32 entry count, u32 data page count. */
const RAM_FIXED_BYTES = 12;
/** Bytes of one entry: u32 page index, u8 kind. */
const ENTRY_HEAD_BYTES = 5;
/** A ZERO_RUN entry's head and its u32 page count. */
const ZERO_RUN_ENTRY_BYTES = ENTRY_HEAD_BYTES + 4;

/** What encoding one batch found, for the statistics (QEMU's duplicate/normal). */
export interface BatchCounts {
  zero: number;
  data: number;
}

/**
 * Record buffers to encode into, handed back once the socket has taken their bytes: a fresh 3 MiB
 * buffer per record costs a page fault per 4 KiB (with glibc, each such allocation is its own mmap),
 * which under nested KVM on TCG was a sixth of the sender's time (bench/migrate, --cpu-prof).
 */
export class RecordBufferPool {
  private readonly spare: Buffer[] = [];

  constructor(
    /** Bytes of each buffer: a whole batch of data pages and room for zero runs. */
    private readonly bytes = RECORD_HEADER_BYTES + RAM_FIXED_BYTES + BATCH_PAGES * (ENTRY_HEAD_BYTES + PAGE_BYTES) + 64 * 1024,
    /** Buffers kept at most; more in flight at once are allocated and dropped. */
    private readonly keep = 4,
  ) {}

  take(): Buffer {
    return this.spare.pop() ?? Buffer.allocUnsafe(this.bytes);
  }

  /** `b` (from take) is no longer read by anyone. */
  give(b: Buffer): void {
    if (this.spare.length < this.keep && b.length === this.bytes) this.spare.push(b);
  }
}

/**
 * One RAM record, whole (record header included): (u32 region, u32 entry count, u32 data page
 * count), then the entries, each a u32 page index and a u8 kind: ZERO_RUN and a u32 count for each
 * of `zeroRuns` (pages known to be zero without reading them: never mapped, or released), then ZERO
 * or DATA for each of `pages`, which are read; then the 4 KiB of every DATA entry, in the entries'
 * order. The data comes last and whole so that a destination can read it from the connection
 * straight into guest RAM (RamRecordLanding). The bytes are copied: the guest keeps writing its
 * pages while the record is in flight, and the copy is what the destination gets for this pass.
 * The copy is also cheaper than it looks. Sending straight from guest RAM instead (a writev of the
 * record's head and views of its runs, each data page with its own XXH3-64 so that a page the guest
 * wrote between hash and send could be refused until a later pass resent it) was built and measured:
 * the source's CPU per 1 GiB full migration went from 254-277 ms to 325-330 (perf, kvm_pvm, 2 runs
 * each), and its wall time did not change (8 alternated runs, medians ~375 ms both). Read from guest
 * RAM by the copy, the bytes are in cache for the stream checksum and the kernel's copy after it;
 * without it, the hash reads them cold and the kernel again.
 */
export function encodeRamRecord(
  regionIndex: number, regionBytes: Uint8Array, pages: ArrayLike<number>, counts: BatchCounts,
  zeroRuns: readonly PageRange[] = [],
  /** A buffer to encode into when it is large enough (the result is then a view of it), else one is allocated. */
  into?: Buffer,
): Buffer {
  const list = pages instanceof Uint32Array ? pages : Uint32Array.from(pages);
  const headsAt = RECORD_HEADER_BYTES + RAM_FIXED_BYTES + zeroRuns.length * ZERO_RUN_ENTRY_BYTES;
  const dataAt = headsAt + list.length * ENTRY_HEAD_BYTES;
  const most = dataAt + list.length * PAGE_BYTES;
  const out = into !== undefined && into.length >= most ? into : Buffer.allocUnsafe(most);
  out.writeUInt8(RecordType.RAM, 0);
  out.writeUInt32LE(regionIndex, RECORD_HEADER_BYTES);
  out.writeUInt32LE(zeroRuns.length + list.length, RECORD_HEADER_BYTES + 4);
  let at = RECORD_HEADER_BYTES + RAM_FIXED_BYTES;
  for (const run of zeroRuns) {
    out.writeUInt32LE(run.firstPage, at);
    out.writeUInt8(PageKind.ZERO_RUN, at + 4);
    out.writeUInt32LE(run.count, at + ENTRY_HEAD_BYTES);
    at += ZERO_RUN_ENTRY_BYTES;
    counts.zero += run.count;
  }
  const data = addon().packPages(regionBytes, PAGE_BYTES, list, out, headsAt, dataAt, PageKind.ZERO, PageKind.DATA);
  out.writeUInt32LE(data, RECORD_HEADER_BYTES + 8);
  counts.data += data;
  counts.zero += list.length - data;
  const end = dataAt + data * PAGE_BYTES;
  out.writeUInt32LE(end - RECORD_HEADER_BYTES, 1);
  return out.subarray(0, end);
}

/** How a RecordReader splits a RAM record: its data pages are the body, read apart from the rest. */
export const RAM_RECORD_SPLIT: RecordSplit = {
  type: RecordType.RAM,
  fixedBytes: RAM_FIXED_BYTES,
  bodyBytes: (fixed) => fixed.readUInt32LE(8) * PAGE_BYTES,
};

/**
 * Puts one RAM record into guest memory (through GuestMemory: invariant B). Made from the record's
 * payload without its data (a RecordReader with RAM_RECORD_SPLIT returns that first): checks the
 * entries, releases the zero pages at once, and lays out where the data goes, which then comes in
 * pieces of any size, in order: copied from wherever it was read (write), or read by a socket
 * straight into the guest bytes that window() lends (landed). The data of a record is written after
 * its zero pages. Throws MigrationStreamError on a record that does not fit this VM.
 */
export class RamRecordLanding {
  /** The record's data, as runs of consecutive pages: each run's guest address and bytes, in order. */
  private readonly runAddress: number[] = [];
  private readonly runBytes: number[] = [];
  /** The run the next byte of data goes to, and how far into it. */
  private run = 0;
  private runDone = 0;
  private left: number;
  private lease: GuestWriteLease | undefined;

  constructor(
    private readonly memory: GuestMemory, prefix: Buffer, dataBytes: number,
    /** RAM is zero wherever no page is marked written (Vm.ramZeroUnlessMarked): only marked zero pages are cleared. */
    zeroUnlessMarked = false,
  ) {
    if (prefix.length < RAM_FIXED_BYTES) throw new MigrationStreamError('RAM record shorter than its header');
    const regionIndex = prefix.readUInt32LE(0);
    const count = prefix.readUInt32LE(4);
    const dataPages = prefix.readUInt32LE(8);
    if (dataBytes !== dataPages * PAGE_BYTES) throw new MigrationStreamError(`RAM record of ${dataPages} data pages comes with ${dataBytes} bytes of data`);
    const region = memory.regions[regionIndex];
    if (region === undefined) throw new MigrationStreamError(`RAM record for region ${regionIndex}, which this VM does not have`);
    const pageCount = region.sizeBytes / PAGE_BYTES;
    let at = RAM_FIXED_BYTES;
    // Runs of consecutive zero pages are released in one call (see GuestMemory.zeroPages).
    let zeroStart = -1;
    let zeroCount = 0;
    const flushZeros = () => {
      if (zeroCount > 0) {
        const address = gpa(region.start + zeroStart * PAGE_BYTES);
        if (zeroUnlessMarked) memory.zeroMarkedPages(address, zeroCount * PAGE_BYTES);
        else memory.zeroPages(address, zeroCount * PAGE_BYTES);
      }
      zeroCount = 0;
    };
    let data = 0;
    let lastDataPage = -2;
    for (let i = 0; i < count; i++) {
      if (at + ENTRY_HEAD_BYTES > prefix.length) throw new MigrationStreamError('RAM record shorter than its page count');
      const page = prefix.readUInt32LE(at);
      const kind = prefix.readUInt8(at + 4);
      at += ENTRY_HEAD_BYTES;
      if (page >= pageCount) throw new MigrationStreamError(`RAM record names page ${page} beyond region ${regionIndex}'s ${pageCount} pages`);
      if (kind === PageKind.ZERO || kind === PageKind.ZERO_RUN) {
        let n = 1;
        if (kind === PageKind.ZERO_RUN) {
          if (at + 4 > prefix.length) throw new MigrationStreamError('RAM record shorter than its page count');
          n = prefix.readUInt32LE(at);
          at += 4;
          if (n === 0) throw new MigrationStreamError(`RAM record names an empty zero run at page ${page}`);
          if (page + n > pageCount) throw new MigrationStreamError(`RAM record names a zero run of ${n} pages from ${page}, beyond region ${regionIndex}'s ${pageCount} pages`);
        }
        if (zeroCount > 0 && page === zeroStart + zeroCount) zeroCount += n;
        else {
          flushZeros();
          zeroStart = page;
          zeroCount = n;
        }
      } else if (kind === PageKind.DATA) {
        if (page === lastDataPage + 1) this.runBytes[this.runBytes.length - 1]! += PAGE_BYTES;
        else {
          this.runAddress.push(region.start + page * PAGE_BYTES);
          this.runBytes.push(PAGE_BYTES);
        }
        lastDataPage = page;
        data++;
      } else throw new MigrationStreamError(`RAM record with page kind ${kind}`);
    }
    if (at !== prefix.length) throw new MigrationStreamError('RAM record has more entries than its count says');
    if (data !== dataPages) throw new MigrationStreamError(`RAM record names ${data} data pages and says it carries ${dataPages}`);
    flushZeros();
    this.left = dataBytes;
  }

  /** Bytes of data still to come. */
  get dataLeft(): number {
    return this.left;
  }

  /** Bytes left of the run that the next byte of data goes to (0 once all data is in). */
  get runLeft(): number {
    return this.left === 0 ? 0 : this.runBytes[this.run]! - this.runDone;
  }

  /** Bytes of the whole run that the next byte of data goes to (0 once all data is in). */
  get runSize(): number {
    return this.left === 0 ? 0 : this.runBytes[this.run]!;
  }

  /** Copies the next `bytes.length` bytes of data (no more than dataLeft) to their pages. */
  write(bytes: Uint8Array): void {
    if (bytes.length > this.left) throw new MigrationStreamError(`RAM record given ${bytes.length} bytes of data with ${this.left} left`);
    for (let from = 0; from < bytes.length;) {
      const n = Math.min(this.runLeft, bytes.length - from);
      this.memory.write(gpa(this.runAddress[this.run]! + this.runDone), bytes.subarray(from, from + n));
      from += n;
      this.advance(n);
    }
  }

  /**
   * The guest bytes the rest of the current run goes to, for one read to land in; landed() then
   * says how many it wrote. Lent until then: see GuestMemory.lendForWrite.
   */
  window(): Uint8Array {
    if (this.left === 0) throw new MigrationStreamError('RAM record has no data left to read');
    this.lease ??= this.memory.lendForWrite(gpa(this.runAddress[this.run]!), this.runBytes[this.run]!);
    return this.lease.view.subarray(this.runDone);
  }

  /** The last window()'s first `bytes` bytes hold the next data: marks their pages. */
  landed(bytes: number): void {
    if (this.lease === undefined || bytes > this.runLeft) throw new MigrationStreamError(`RAM record: ${bytes} bytes landed outside the lent window`);
    this.lease.landed(this.runDone, bytes);
    this.advance(bytes);
  }

  private advance(n: number): void {
    this.left -= n;
    this.runDone += n;
    if (this.left > 0 && this.runDone === this.runBytes[this.run]) {
      this.run++;
      this.runDone = 0;
      this.lease = undefined;
    }
  }
}

/**
 * Writes a whole RAM record's payload (data included) into guest memory: RamRecordLanding for a
 * record read in one piece. Throws MigrationStreamError on a record that does not fit this VM.
 */
export function applyRamRecord(memory: GuestMemory, payload: Buffer): void {
  if (payload.length < RAM_FIXED_BYTES) throw new MigrationStreamError('RAM record shorter than its header');
  const dataBytes = RAM_RECORD_SPLIT.bodyBytes(payload.subarray(0, RAM_FIXED_BYTES));
  if (dataBytes > payload.length - RAM_FIXED_BYTES) throw new MigrationStreamError('RAM record shorter than its pages');
  const prefixEnd = payload.length - dataBytes;
  new RamRecordLanding(memory, payload.subarray(0, prefixEnd), dataBytes).write(payload.subarray(prefixEnd));
}
