import { gpa } from '../arch/x86/layout.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import type { PageRange } from '../memory/dirty-bitmap.js';
import { addon } from '../kvm/addon.js';
import { MigrationStreamError, PAGE_BYTES, PageKind, RECORD_HEADER_BYTES, RecordType } from './protocol.js';

/** Pages per RAM record: 1 MiB of data, few enough syscalls, small enough to interleave. */
export const BATCH_PAGES = 256;

/** What encoding one batch found, for the statistics (QEMU's duplicate/normal). */
export interface BatchCounts {
  zero: number;
  data: number;
}

/**
 * Record buffers to encode into, handed back once the socket has taken their bytes: a fresh 1 MiB
 * buffer per record costs a page fault per 4 KiB (with glibc, each such allocation is its own mmap),
 * which under nested KVM on TCG was a sixth of the sender's time (bench/migrate, --cpu-prof).
 */
export class RecordBufferPool {
  private readonly spare: Buffer[] = [];

  constructor(
    /** Bytes of each buffer: a whole batch of data pages and room for zero runs. */
    private readonly bytes = RECORD_HEADER_BYTES + 8 + BATCH_PAGES * (ENTRY_HEAD_BYTES + PAGE_BYTES) + 64 * 1024,
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

/** Bytes of one entry before its page data: u32 page index, u8 kind. */
const ENTRY_HEAD_BYTES = 5;
/** A ZERO_RUN entry's head and its u32 page count. */
const ZERO_RUN_ENTRY_BYTES = ENTRY_HEAD_BYTES + 4;

/**
 * One RAM record, whole (record header included): (u32 region, u32 entry count), then per entry u32
 * page index and u8 kind: ZERO_RUN and a u32 count for each of `zeroRuns` (pages known to be zero
 * without reading them: never mapped, or released), then ZERO, or DATA and the 4 KiB, for each of
 * `pages`, which are read. The bytes are copied: the guest keeps writing its pages while the record
 * is in flight, and the copy is what the destination gets for this pass.
 */
export function encodeRamRecord(
  regionIndex: number, regionBytes: Uint8Array, pages: ArrayLike<number>, counts: BatchCounts,
  zeroRuns: readonly PageRange[] = [],
  /** A buffer to encode into when it is large enough (the result is then a view of it), else one is allocated. */
  into?: Buffer,
): Buffer {
  const list = pages instanceof Uint32Array ? pages : Uint32Array.from(pages);
  const most = RECORD_HEADER_BYTES + 8 + zeroRuns.length * ZERO_RUN_ENTRY_BYTES + list.length * (ENTRY_HEAD_BYTES + PAGE_BYTES);
  const out = into !== undefined && into.length >= most ? into : Buffer.allocUnsafe(most);
  out.writeUInt8(RecordType.RAM, 0);
  out.writeUInt32LE(regionIndex, RECORD_HEADER_BYTES);
  out.writeUInt32LE(zeroRuns.length + list.length, RECORD_HEADER_BYTES + 4);
  let at = RECORD_HEADER_BYTES + 8;
  for (const run of zeroRuns) {
    out.writeUInt32LE(run.firstPage, at);
    out.writeUInt8(PageKind.ZERO_RUN, at + 4);
    out.writeUInt32LE(run.count, at + ENTRY_HEAD_BYTES);
    at += ZERO_RUN_ENTRY_BYTES;
    counts.zero += run.count;
  }
  const start = at;
  at = addon().packPages(regionBytes, PAGE_BYTES, list, out, at, PageKind.ZERO, PageKind.DATA);
  const data = (at - start - list.length * ENTRY_HEAD_BYTES) / PAGE_BYTES;
  counts.data += data;
  counts.zero += list.length - data;
  out.writeUInt32LE(at - RECORD_HEADER_BYTES, 1);
  return out.subarray(0, at);
}

/**
 * How many DATA entries, from the one at byte `at` of a RAM payload (for `page`), name consecutive
 * pages. Looks at entry headers only; a malformed entry just ends the run (the caller's own checks
 * report it).
 */
function dataRun(payload: Buffer, at: number, page: number, pageCount: number): number {
  let run = 0;
  while (at + ENTRY_HEAD_BYTES + PAGE_BYTES <= payload.length && page + run < pageCount
    && payload.readUInt32LE(at) === page + run && payload.readUInt8(at + 4) === PageKind.DATA) {
    run++;
    at += ENTRY_HEAD_BYTES + PAGE_BYTES;
  }
  return Math.max(run, 1);
}

/**
 * Writes the pages of a RAM record's payload into guest memory (through GuestMemory: invariant B).
 * Throws MigrationStreamError on a record that does not fit this VM.
 */
export function applyRamRecord(memory: GuestMemory, payload: Buffer): void {
  const regionIndex = payload.readUInt32LE(0);
  const count = payload.readUInt32LE(4);
  const region = memory.regions[regionIndex];
  if (region === undefined) throw new MigrationStreamError(`RAM record for region ${regionIndex}, which this VM does not have`);
  const pageCount = region.sizeBytes / PAGE_BYTES;
  let at = 8;
  // Runs of consecutive zero pages are released in one call (see GuestMemory.zeroPages).
  let zeroStart = -1;
  let zeroCount = 0;
  /** The run of data pages [runStart, runEnd) populated ahead of its copies (GuestMemory.populate). */
  let runStart = 0;
  let runEnd = 0;
  const flushZeros = () => {
    if (zeroCount > 0) memory.zeroPages(gpa(region.start + zeroStart * PAGE_BYTES), zeroCount * PAGE_BYTES);
    zeroCount = 0;
  };
  for (let i = 0; i < count; i++) {
    if (at + ENTRY_HEAD_BYTES > payload.length) throw new MigrationStreamError('RAM record shorter than its page count');
    const page = payload.readUInt32LE(at);
    const kind = payload.readUInt8(at + 4);
    at += ENTRY_HEAD_BYTES;
    if (page >= pageCount) throw new MigrationStreamError(`RAM record names page ${page} beyond region ${regionIndex}'s ${pageCount} pages`);
    if (kind === PageKind.ZERO || kind === PageKind.ZERO_RUN) {
      let n = 1;
      if (kind === PageKind.ZERO_RUN) {
        if (at + 4 > payload.length) throw new MigrationStreamError('RAM record shorter than its page count');
        n = payload.readUInt32LE(at);
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
      flushZeros();
      if (at + PAGE_BYTES > payload.length) throw new MigrationStreamError('RAM record shorter than its pages');
      if (page < runStart || page >= runEnd) {
        runStart = page;
        runEnd = page + dataRun(payload, at - ENTRY_HEAD_BYTES, page, pageCount);
        memory.populate(gpa(region.start + page * PAGE_BYTES), (runEnd - page) * PAGE_BYTES);
      }
      // This entry and the data entries after it in the populated run, in one call.
      const n = memory.writePageEntries(regionIndex, payload, at - ENTRY_HEAD_BYTES, Math.min(count - i, runEnd - page), PageKind.DATA);
      if (n === 0) throw new MigrationStreamError(`RAM record's page ${page} could not be written`); // not reached: checked above
      i += n - 1;
      at += n * (ENTRY_HEAD_BYTES + PAGE_BYTES) - ENTRY_HEAD_BYTES;
    } else throw new MigrationStreamError(`RAM record with page kind ${kind}`);
  }
  flushZeros();
  if (at !== payload.length) throw new MigrationStreamError('RAM record longer than its pages');
}
