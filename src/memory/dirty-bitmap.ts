import { PAGE_SIZE } from '../arch/x86/layout.js';
import { addon } from '../kvm/addon.js';

/** Bits taken from a DirtyBitmap: one per page, in its layout, and how many are set. */
export interface TakenPages {
  readonly bitmap: Uint32Array;
  readonly pages: number;
}

/**
 * One bit per 4 KiB page of a RAM region: the pages written since the last getAndReset, by the guest
 * (folded in from KVM's per-slot logs) or by the VMM itself (markDirty). It belongs to the region,
 * not to a memslot: slots come and go, the bits stay.
 *
 * Words live in a SharedArrayBuffer and are updated with Atomics, so vCPU threads and the main thread
 * may mark concurrently, and getAndReset takes every bit exactly once: a bit set during a reset lands
 * either in this snapshot or in the next one, never in neither. Bit order is KVM's: page i is bit
 * (i % 32) of 32-bit word i / 32, the same memory layout as KVM's little-endian u64 bitmaps.
 */
export class DirtyBitmap {
  readonly words: Int32Array;
  /**
   * Word 0: 1 once a bit has been set since the last take. Set after the bits (a taker that reads 0
   * may miss a bit being set, which stays for the next take), so a take with nothing marked, the
   * usual case of a migration's sync, skips the scan of the words.
   */
  private readonly marked: Int32Array;
  /** The words and the flag, for another thread's DirtyBitmap over the same bits (GuestMemory.attach). */
  readonly shared: SharedArrayBuffer;

  constructor(readonly pageCount: number, shared?: SharedArrayBuffer) {
    const wordCount = Math.ceil(pageCount / 32);
    this.shared = shared ?? new SharedArrayBuffer((wordCount + 1) * 4);
    if (this.shared.byteLength !== (wordCount + 1) * 4) throw new RangeError(`DirtyBitmap: ${this.shared.byteLength} bytes are not the bitmap of ${pageCount} pages`);
    this.words = new Int32Array(this.shared, 0, wordCount);
    this.marked = new Int32Array(this.shared, wordCount * 4, 1);
  }

  /** Marks every page that [offset, offset + lengthBytes) touches. */
  markDirty(offset: number, lengthBytes: number): void {
    if (lengthBytes <= 0) return;
    const first = Math.floor(offset / PAGE_SIZE);
    const last = Math.floor((offset + lengthBytes - 1) / PAGE_SIZE);
    this.markPages(first, last - first + 1);
  }

  markPages(firstPage: number, count: number): void {
    if (firstPage < 0 || count < 0 || firstPage + count > this.pageCount) {
      throw new RangeError(`DirtyBitmap: pages ${firstPage}+${count} outside 0..${this.pageCount}`);
    }
    let page = firstPage;
    const end = firstPage + count;
    while (page < end) {
      const word = page >>> 5;
      const bit = page & 31;
      const n = Math.min(32 - bit, end - page);
      const mask = n === 32 ? -1 : ((1 << n) - 1) << bit;
      Atomics.or(this.words, word, mask);
      page += n;
    }
    if (count > 0) Atomics.store(this.marked, 0, 1);
  }

  dirtyAt(page: number): boolean {
    return (Atomics.load(this.words, page >>> 5) & (1 << (page & 31))) !== 0;
  }

  /**
   * ORs a KVM dirty log (u64 words, page 0 = the slot's first page) into this bitmap at `firstPage`.
   * Only non-zero words cost an atomic operation, so a clean log costs a scan (in the addon: the JS
   * loop was most of a sync's time, bench/dirty-sync). Returns whether the log had any page set.
   */
  orLog(log: Uint8Array, logPages: number, firstPage: number): boolean {
    if (firstPage < 0 || firstPage + logPages > this.pageCount) {
      throw new RangeError(`DirtyBitmap: log of ${logPages} pages at ${firstPage} outside 0..${this.pageCount}`);
    }
    const any = addon().bitmapOrLog(this.words, firstPage, log, logPages);
    if (any) Atomics.store(this.marked, 0, 1);
    return any;
  }

  /**
   * Takes every set bit and clears it, atomically per word. `into` (overwritten whole) saves an
   * allocation per sync: a fresh bitmap costs page faults, which dominated a clean sync.
   */
  getAndReset(into: Uint32Array = new Uint32Array(this.words.length)): TakenPages {
    if (into.length < this.words.length) throw new RangeError(`DirtyBitmap: ${into.length} words cannot take ${this.words.length}`);
    const bitmap = into.length === this.words.length ? into : into.subarray(0, this.words.length);
    Atomics.store(this.marked, 0, 0); // before the take: a bit set after it is in this take or flagged for the next
    const pages = addon().bitmapTake(this.words, bitmap);
    return { bitmap, pages };
  }

  /**
   * Takes every set bit and ORs it into `into` (a sync's result, already holding KVM's logs in this
   * bitmap's layout); returns how many bits of `into` that set. Costs nothing when no bit was set
   * since the last take: the flag is read first, and `into`'s size checked only when there is
   * something to take (a sync runs cold, once per region, where each load is a cache miss).
   */
  takeInto(into: Uint32Array): number {
    if (Atomics.exchange(this.marked, 0, 0) === 0) return 0;
    if (into.length < this.words.length) {
      Atomics.store(this.marked, 0, 1); // nothing was taken: the bits wait for the next take
      throw new RangeError(`DirtyBitmap: ${into.length} words cannot take ${this.words.length}`);
    }
    return addon().bitmapTakeOr(this.words, into);
  }

  /**
   * The runs of set bits among pages [firstPage, firstPage + count), ascending, each word read once
   * (a bit set meanwhile may or may not show). Clear words are skipped whole: an incoming migration
   * asks this of every zero run the stream sends (GuestMemory.zeroMarkedPages), a whole region at a time.
   */
  markedRuns(firstPage: number, count: number): PageRange[] {
    if (firstPage < 0 || count < 0 || firstPage + count > this.pageCount) {
      throw new RangeError(`DirtyBitmap: pages ${firstPage}+${count} outside 0..${this.pageCount}`);
    }
    return setBitRuns((i) => Atomics.load(this.words, i), firstPage, count);
  }

  /** Sets every bit (the start of dirty tracking: every page is yet to be sent). */
  setAll(): void {
    this.markPages(0, this.pageCount);
  }

  count(): number {
    return countPages(new Uint32Array(this.words.buffer, this.words.byteOffset, this.words.length));
  }
}

/** Number of set bits. */
export function countPages(bitmap: Uint32Array): number {
  let n = 0;
  for (let i = 0; i < bitmap.length; i++) {
    let w = bitmap[i]!;
    if (w === 0) continue;
    w -= (w >>> 1) & 0x55555555;
    w = (w & 0x33333333) + ((w >>> 2) & 0x33333333);
    n += (((w + (w >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
  }
  return n;
}

/** A run of dirty pages: [firstPage, firstPage + count). */
export interface PageRange {
  readonly firstPage: number;
  readonly count: number;
}

/** The runs of set bits among the first `pageCount` bits of `bitmap`, in ascending order. */
export function pageRanges(bitmap: Uint32Array, pageCount: number): PageRange[] {
  return setBitRuns((i) => bitmap[i]! | 0, 0, pageCount);
}

/**
 * The runs of set bits among pages [firstPage, firstPage + count) of a bitmap in KVM's layout whose
 * 32-bit words `word` reads, each once, in ascending order. A word with no bit set outside a run, or
 * every bit set inside one, is passed over whole.
 */
function setBitRuns(word: (index: number) => number, firstPage: number, count: number): PageRange[] {
  const runs: PageRange[] = [];
  const end = firstPage + count;
  let start = -1;
  let page = firstPage;
  while (page < end) {
    const w = word(page >>> 5);
    const n = Math.min(32 - (page & 31), end - page);
    if ((w === 0 && start < 0) || (w === -1 && start >= 0)) {
      page += n;
      continue;
    }
    for (const stop = page + n; page < stop; page++) {
      const set = (w & (1 << (page & 31))) !== 0;
      if (set && start < 0) start = page;
      else if (!set && start >= 0) {
        runs.push({ firstPage: start, count: page - start });
        start = -1;
      }
    }
  }
  if (start >= 0) runs.push({ firstPage: start, count: end - start });
  return runs;
}
