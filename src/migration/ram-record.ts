import { gpa } from '../arch/x86/layout.js';
import type { GuestMemory } from '../memory/guest-memory.js';
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
 * One RAM record, whole (record header included): (u32 region, u32 count), then per page u32 index,
 * u8 kind, and the 4 KiB unless the page is zero. The bytes are copied: the guest keeps writing its
 * pages while the record is in flight, and the copy is what the destination gets for this pass.
 */
export function encodeRamRecord(
  regionIndex: number, regionBytes: Uint8Array, pages: ArrayLike<number>, counts: BatchCounts,
  /** Non-zero where a page is known to be zero without reading it (never written: a memfd hole). */
  knownZero?: ArrayLike<number>,
): Buffer {
  const zero = zeroPages(regionBytes, pages, knownZero);
  const out = Buffer.allocUnsafe(RECORD_HEADER_BYTES + 8 + pages.length * (5 + PAGE_BYTES));
  out.writeUInt8(RecordType.RAM, 0);
  out.writeUInt32LE(regionIndex, RECORD_HEADER_BYTES);
  out.writeUInt32LE(pages.length, RECORD_HEADER_BYTES + 4);
  let at = RECORD_HEADER_BYTES + 8;
  for (let i = 0; i < pages.length; i++) {
    const p = pages[i]!;
    out.writeUInt32LE(p, at);
    if (zero[i]) {
      out.writeUInt8(PageKind.ZERO, at + 4);
      at += 5;
      counts.zero++;
    } else {
      out.writeUInt8(PageKind.DATA, at + 4);
      out.set(regionBytes.subarray(p * PAGE_BYTES, (p + 1) * PAGE_BYTES), at + 5);
      at += 5 + PAGE_BYTES;
      counts.data++;
    }
  }
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
  while (at + 5 + PAGE_BYTES <= payload.length && page + run < pageCount
    && payload.readUInt32LE(at) === page + run && payload.readUInt8(at + 4) === PageKind.DATA) {
    run++;
    at += 5 + PAGE_BYTES;
  }
  return Math.max(run, 1);
}

/**
 * Which of `pages` are zero: 1 where knownZero says so, without reading the page (reading a
 * never-written memfd page would allocate and zero it for nothing), and for the rest as the addon's
 * scan finds them.
 */
function zeroPages(regionBytes: Uint8Array, pages: ArrayLike<number>, knownZero?: ArrayLike<number>): Uint8Array {
  const n = pages.length;
  const zero = new Uint8Array(n);
  const scan = new Uint32Array(n);
  const scanAt = new Uint32Array(n);
  let m = 0;
  for (let i = 0; i < n; i++) {
    if (knownZero?.[i]) zero[i] = 1;
    else {
      scan[m] = pages[i]!;
      scanAt[m++] = i;
    }
  }
  const found = new Uint8Array(m);
  addon().findZeroPages(regionBytes, PAGE_BYTES, scan.subarray(0, m), found);
  for (let j = 0; j < m; j++) zero[scanAt[j]!] = found[j]!;
  return zero;
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
    if (at + 5 > payload.length) throw new MigrationStreamError('RAM record shorter than its page count');
    const page = payload.readUInt32LE(at);
    const kind = payload.readUInt8(at + 4);
    at += 5;
    if (page >= pageCount) throw new MigrationStreamError(`RAM record names page ${page} beyond region ${regionIndex}'s ${pageCount} pages`);
    if (kind === PageKind.ZERO) {
      if (zeroCount > 0 && page === zeroStart + zeroCount) zeroCount++;
      else {
        flushZeros();
        zeroStart = page;
        zeroCount = 1;
      }
    } else if (kind === PageKind.DATA) {
      flushZeros();
      if (at + PAGE_BYTES > payload.length) throw new MigrationStreamError('RAM record shorter than its pages');
      if (page < runStart || page >= runEnd) {
        runStart = page;
        runEnd = page + dataRun(payload, at - 5, page, pageCount);
        memory.populate(gpa(region.start + page * PAGE_BYTES), (runEnd - page) * PAGE_BYTES);
      }
      memory.write(gpa(region.start + page * PAGE_BYTES), payload.subarray(at, at + PAGE_BYTES));
      at += PAGE_BYTES;
    } else throw new MigrationStreamError(`RAM record with page kind ${kind}`);
  }
  flushZeros();
  if (at !== payload.length) throw new MigrationStreamError('RAM record longer than its pages');
}
