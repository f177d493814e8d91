import { describe, expect, it } from 'vitest';
import { DirtyBitmap, countPages, pageRanges } from '../../../src/memory/dirty-bitmap.js';
import { addon } from '../../../src/kvm/addon.js';

const setBits = (b: Uint32Array, n: number) => pageRanges(b, n).flatMap((r) => Array.from({ length: r.count }, (_, i) => r.firstPage + i));

describe('DirtyBitmap', () => {
  it('marks every page a byte range touches', () => {
    const b = new DirtyBitmap(100);
    b.markDirty(4095, 2); // straddles pages 0 and 1
    b.markDirty(10 * 4096, 4096); // exactly page 10
    b.markDirty(20 * 4096 + 5, 1);
    expect(setBits(b.getAndReset().bitmap, 100)).toEqual([0, 1, 10, 20]);
    b.markDirty(0, 0);
    expect(b.count()).toBe(0);
  });

  it('marks long runs across word boundaries', () => {
    const b = new DirtyBitmap(200);
    b.markPages(30, 70);
    expect(pageRanges(b.getAndReset().bitmap, 200)).toEqual([{ firstPage: 30, count: 70 }]);
    expect(() => b.markPages(190, 11)).toThrow(RangeError);
  });

  it('markedRuns lists the runs of set bits within a range, across words, and takes none', () => {
    const b = new DirtyBitmap(300);
    b.markPages(5, 3);
    b.markPages(30, 70); // words 0 to 3, the middle ones whole
    b.markPages(299, 1);
    expect(b.markedRuns(0, 300)).toEqual([{ firstPage: 5, count: 3 }, { firstPage: 30, count: 70 }, { firstPage: 299, count: 1 }]);
    expect(b.markedRuns(6, 90)).toEqual([{ firstPage: 6, count: 2 }, { firstPage: 30, count: 66 }]); // cut at both ends
    expect(b.markedRuns(100, 199)).toEqual([]);
    expect(b.markedRuns(0, 0)).toEqual([]);
    expect(b.count()).toBe(74);
    expect(() => b.markedRuns(250, 51)).toThrow(RangeError);
  });

  it('getAndReset takes each bit exactly once', () => {
    const b = new DirtyBitmap(64);
    b.markPages(3, 1);
    expect(countPages(b.getAndReset().bitmap)).toBe(1);
    expect(countPages(b.getAndReset().bitmap)).toBe(0);
    b.markPages(3, 1);
    expect(b.dirtyAt(3)).toBe(true);
  });

  it('takeInto ORs its bits into a sync result once; a result too small is refused and the bits wait for the next take', () => {
    const b = new DirtyBitmap(100);
    const into = new Uint32Array(4);
    into[0] = 0b1; // KVM's log had page 0
    expect(b.takeInto(into)).toBe(0); // nothing marked: nothing read
    b.markPages(70, 2);
    expect(() => b.takeInto(new Uint32Array(1))).toThrow(/1 words cannot take 4/);
    expect(b.takeInto(into)).toBe(2);
    expect(countPages(into)).toBe(3);
    expect(b.takeInto(into)).toBe(0);
  });

  it('folds a KVM log in at any page offset, aligned or not, ignoring bits past the slot', () => {
    for (const first of [0, 1, 31, 32, 33, 64, 95]) {
      const b = new DirtyBitmap(400);
      const logPages = 70;
      const log = new Uint32Array(4); // 2 u64 words, as KVM sizes it
      log[0] = 0x8000_0001; // pages 0, 31
      log[1] = 0x0000_0001; // page 32
      log[2] = 0xffff_ffff; // pages 64..69 are in the slot; 70..95 must be ignored
      b.orLog(new Uint8Array(log.buffer), logPages, first);
      expect(setBits(b.getAndReset().bitmap, 400)).toEqual([0, 31, 32, 64, 65, 66, 67, 68, 69].map((p) => p + first));
    }
  });

  it('folds and takes random logs at random offsets exactly as a bit-by-bit reference does', () => {
    let seed = 12345;
    const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
    for (let round = 0; round < 50; round++) {
      const pageCount = 1 + Math.floor(rand() * 20000);
      const b = new DirtyBitmap(pageCount);
      const expected = new Set<number>();
      for (let k = 0; k < 3; k++) {
        const logPages = 1 + Math.floor(rand() * pageCount);
        const first = Math.floor(rand() * (pageCount - logPages + 1));
        const log = new Uint8Array(Math.ceil(logPages / 64) * 8);
        const density = rand() < 0.3 ? 0.9 : 0.01;
        // Set bits past the slot too: they must be ignored.
        for (let p = 0; p < log.length * 8; p++) {
          if (rand() < density) {
            log[p >>> 3]! |= 1 << (p & 7);
            if (p < logPages) expected.add(first + p);
          }
        }
        b.orLog(log, logPages, first);
      }
      const taken = b.getAndReset();
      expect(taken.pages).toBe(expected.size);
      expect(setBits(taken.bitmap, pageCount)).toEqual([...expected].sort((x, y) => x - y));
      expect(b.getAndReset().pages).toBe(0);
    }
  });

  it('takes into a reused buffer, overwriting whatever it held', () => {
    const b = new DirtyBitmap(5000);
    const into = new Uint32Array(b.words.length + 3).fill(0xffffffff);
    b.markPages(4000, 2);
    const taken = b.getAndReset(into);
    expect(taken.bitmap.length).toBe(b.words.length);
    expect(taken.pages).toBe(2);
    expect(setBits(taken.bitmap, 5000)).toEqual([4000, 4001]);
    expect(() => b.getAndReset(new Uint32Array(b.words.length - 1))).toThrow(RangeError);
  });

  it('refuses a log that does not fit', () => {
    expect(() => new DirtyBitmap(64).orLog(new Uint8Array(8), 64, 1)).toThrow(RangeError);
  });

  it('is shared across views of the same bits (threads mark into one bitmap), the marked flag too', () => {
    const a = new DirtyBitmap(64);
    const b = new DirtyBitmap(64, a.shared);
    b.markPages(5, 1);
    expect(a.dirtyAt(5)).toBe(true);
    const into = new Uint32Array(a.words.length);
    expect(a.takeInto(into)).toBe(1);
    expect(setBits(into, 64)).toEqual([5]);
    expect(() => new DirtyBitmap(65, a.shared)).toThrow(RangeError);
  });

  it('takeInto ORs the bits into a sync result, counts only the new ones, and takes each once', () => {
    const b = new DirtyBitmap(5000);
    const into = new Uint32Array(b.words.length);
    into[0] = 0b1010; // pages 1 and 3, as if from KVM's log
    b.markPages(3, 3); // 3 (already there), 4, 5
    b.markPages(4999, 1);
    expect(b.takeInto(into)).toBe(3);
    expect(setBits(into, 5000)).toEqual([1, 3, 4, 5, 4999]);
    expect(b.count()).toBe(0);
    expect(b.takeInto(into)).toBe(0);
    b.markPages(7, 1);
    expect(() => b.takeInto(new Uint32Array(b.words.length - 1))).toThrow(RangeError);
  });

  it('takeInto skips the scan when nothing was marked, and a folded log counts as marked', () => {
    const b = new DirtyBitmap(256);
    const into = new Uint32Array(b.words.length);
    // A bit in the words that no mark announced (written behind the flag's back): not taken, which
    // shows the flag, not a scan, decided. Marking anything then takes both.
    Atomics.or(b.words, 2, 1);
    expect(b.takeInto(into)).toBe(0);
    expect(b.dirtyAt(64)).toBe(true);
    b.markPages(0, 1);
    expect(b.takeInto(into)).toBe(2);
    expect(setBits(into, 256)).toEqual([0, 64]);
    const log = new Uint8Array(8);
    log[0] = 0b100; // page 2 of the log
    b.orLog(log, 64, 128);
    expect(b.takeInto(into)).toBe(1);
    expect(setBits(into, 256)).toEqual([0, 64, 130]);
    b.markPages(7, 1);
    b.getAndReset(); // also clears the flag with the bits
    expect(b.takeInto(into)).toBe(0);
  });
});

describe('bitmapCount and bitmapTakeOr (addon)', () => {
  it('count every set bit, through clean stretches and at the end', () => {
    const bm = new Uint32Array(1000);
    expect(addon().bitmapCount(bm)).toBe(0);
    bm[0] = 0xffff_ffff;
    bm[500] = 0b1011;
    bm[999] = 0x8000_0000;
    expect(addon().bitmapCount(bm)).toBe(32 + 3 + 1);
    expect(addon().bitmapCount(bm.subarray(1, 999))).toBe(3);
  });

  it('bitmapTakeOr moves bits by OR and counts those it added', () => {
    const src = new Int32Array(200);
    const dst = new Uint32Array(201).fill(0);
    src[3] = 0b0110;
    src[199] = -1;
    dst[3] = 0b0011;
    dst[200] = 7; // past src: untouched
    expect(addon().bitmapTakeOr(src, dst)).toBe(1 + 32);
    expect([dst[3], dst[199], dst[200]]).toEqual([0b0111, 0xffff_ffff, 7]);
    expect(src.every((w) => w === 0)).toBe(true);
    expect(() => addon().bitmapTakeOr(src, new Uint32Array(199))).toThrow(RangeError);
  });
});

describe('pageRanges', () => {
  it('turns a bitmap into runs, including runs that end at the last page', () => {
    const bm = new Uint32Array([0b1110_0001, 0, 0xffff_ffff, 0x1]);
    expect(pageRanges(bm, 128)).toEqual([
      { firstPage: 0, count: 1 }, { firstPage: 5, count: 3 }, { firstPage: 64, count: 33 },
    ]);
    expect(pageRanges(new Uint32Array([0xffff_ffff]), 20)).toEqual([{ firstPage: 0, count: 20 }]);
    expect(pageRanges(new Uint32Array(4), 128)).toEqual([]);
  });

  it('agrees with a bit-by-bit reading on random bitmaps', () => {
    let seed = 12345;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 16) & 0xffff;
    for (let t = 0; t < 50; t++) {
      const pages = 1 + (rnd() % 300);
      const bm = new Uint32Array(Math.ceil(pages / 32));
      for (let i = 0; i < bm.length; i++) bm[i] = (rnd() & 1 ? (rnd() << 16) | rnd() : rnd() & 1 ? 0xffffffff : 0) >>> 0;
      const expected: number[] = [];
      for (let p = 0; p < pages; p++) if ((bm[p >>> 5]! >>> (p & 31)) & 1) expected.push(p);
      expect(setBits(bm, pages)).toEqual(expected);
      expect(countPages(bm.map((w, i) => (i === bm.length - 1 && pages % 32 ? w & ((1 << (pages % 32)) - 1) : w)) as Uint32Array)).toBe(expected.length);
    }
  });
});

describe('addon bitmapPages (the page lists a migration pass sends)', () => {
  const native = addon();
  const listAll = (bm: Uint32Array, from: number, batch: number) => {
    const out = new Uint32Array(batch);
    const all: number[] = [];
    for (;;) {
      const n = native.bitmapPages(bm, from, out);
      all.push(...out.subarray(0, n));
      if (n < batch) return all;
      from = out[n - 1]! + 1;
    }
  };

  it('lists every set bit in order, batch by batch, across long clean stretches, from any page', () => {
    let seed = 7;
    const random = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
    for (const words of [1, 63, 64, 65, 1000]) {
      const bm = new Uint32Array(words);
      for (let i = 0; i < words; i++) if (random() < 0.1) bm[i] = (random() * 2 ** 32) >>> 0;
      bm[words - 1] |= 0x80000000; // the last page of all
      const every = setBits(bm, words * 32);
      for (const batch of [1, 3, 256]) {
        expect(listAll(bm, 0, batch)).toEqual(every);
        const from = Math.floor(words * 32 / 2) + 5; // mid-word
        expect(listAll(bm, from, batch)).toEqual(every.filter((p) => p >= from));
      }
    }
    expect(native.bitmapPages(new Uint32Array(200), 0, new Uint32Array(4))).toBe(0);
    expect(native.bitmapPages(Uint32Array.of(1), 33, new Uint32Array(4))).toBe(0); // past the end
  });
});
