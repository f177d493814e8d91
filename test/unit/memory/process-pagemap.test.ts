// /proc/self/pagemap read for a mapping of this process: which of its pages are mapped, without touching any.
import { describe, expect, it } from 'vitest';
import { addon } from '../../../src/kvm/addon.js';
import { MADV_NOHUGEPAGE } from '../../../src/kvm/constants.js';
import { ProcessPagemap } from '../../../src/memory/process-pagemap.js';

describe('ProcessPagemap', () => {
  it('lists the pages written, in runs, and none of those never touched; reading them maps none', () => {
    const native = addon();
    const pages = 300_000; // more than one chunk of entries (64 Ki pages)
    const buffer = native.mmapAnonymous(pages * 4096);
    const pagemap = new ProcessPagemap();
    try {
      native.madvise(buffer, 0, buffer.byteLength, MADV_NOHUGEPAGE); // 4 KiB pages: runs exactly as written
      const bytes = new Uint8Array(buffer);
      const hva = native.bufferAddress(buffer);
      expect(pagemap.mappedRanges(hva, pages, 'the test mapping')).toEqual([]);
      for (const p of [3, 4, 5, 70_000, 299_999]) bytes[p * 4096 + 17] = 1;
      const ranges = pagemap.mappedRanges(hva, pages, 'the test mapping');
      expect(ranges).toEqual([{ firstPage: 3, count: 3 }, { firstPage: 70_000, count: 1 }, { firstPage: 299_999, count: 1 }]);
      expect(pagemap.mappedRanges(hva, pages, 'the test mapping')).toEqual(ranges); // and the reading mapped nothing
    } finally {
      pagemap.close();
      native.munmap(buffer);
    }
  });
});
