import { gpa } from '../arch/x86/layout.js';
import { isZeroBytes, type GuestMemory } from '../memory/guest-memory.js';
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
export function encodeRamRecord(regionIndex: number, regionBytes: Uint8Array, pages: ArrayLike<number>, counts: BatchCounts): Buffer {
  const out = Buffer.allocUnsafe(RECORD_HEADER_BYTES + 8 + pages.length * (5 + PAGE_BYTES));
  out.writeUInt8(RecordType.RAM, 0);
  out.writeUInt32LE(regionIndex, RECORD_HEADER_BYTES);
  out.writeUInt32LE(pages.length, RECORD_HEADER_BYTES + 4);
  let at = RECORD_HEADER_BYTES + 8;
  for (let i = 0; i < pages.length; i++) {
    const p = pages[i]!;
    const page = regionBytes.subarray(p * PAGE_BYTES, (p + 1) * PAGE_BYTES);
    out.writeUInt32LE(p, at);
    if (isZeroBytes(page)) {
      out.writeUInt8(PageKind.ZERO, at + 4);
      at += 5;
      counts.zero++;
    } else {
      out.writeUInt8(PageKind.DATA, at + 4);
      out.set(page, at + 5);
      at += 5 + PAGE_BYTES;
      counts.data++;
    }
  }
  out.writeUInt32LE(at - RECORD_HEADER_BYTES, 1);
  return out.subarray(0, at);
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
  for (let i = 0; i < count; i++) {
    if (at + 5 > payload.length) throw new MigrationStreamError('RAM record shorter than its page count');
    const page = payload.readUInt32LE(at);
    const kind = payload.readUInt8(at + 4);
    at += 5;
    if (page >= pageCount) throw new MigrationStreamError(`RAM record names page ${page} beyond region ${regionIndex}'s ${pageCount} pages`);
    const address = gpa(region.start + page * PAGE_BYTES);
    if (kind === PageKind.ZERO) {
      // A fresh destination's RAM is zero already: writing it would allocate every page.
      if (!memory.isZero(address, PAGE_BYTES)) memory.fill(address, PAGE_BYTES, 0);
    } else if (kind === PageKind.DATA) {
      if (at + PAGE_BYTES > payload.length) throw new MigrationStreamError('RAM record shorter than its pages');
      memory.write(address, payload.subarray(at, at + PAGE_BYTES));
      at += PAGE_BYTES;
    } else throw new MigrationStreamError(`RAM record with page kind ${kind}`);
  }
  if (at !== payload.length) throw new MigrationStreamError('RAM record longer than its pages');
}
