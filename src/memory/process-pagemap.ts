/**
 * Which pages of this process's memory are mapped, as /proc/self/pagemap tells (present or swapped),
 * read without touching the memory itself, which would map it (Documentation/admin-guide/mm/pagemap.rst).
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { addon } from '../kvm/addon.js';
import type { PageRange } from './dirty-bitmap.js';

const PAGE_SIZE = 4096;
/** Pagemap entries read at a time (8 bytes each): 512 KiB, 256 MiB of memory. */
const CHUNK_PAGES = 64 * 1024;

export class PagemapError extends Error {
  override name = 'PagemapError';
}

export class ProcessPagemap {
  private fd: number | undefined;

  /**
   * The page ranges of the `pages` pages from `hva` (page-aligned) that are mapped, in page numbers
   * from `hva`; undefined where this /proc has no pagemap (the caller must then take every page as
   * possibly holding data). `label` names the memory in errors.
   */
  mappedRanges(hva: bigint, pages: number, label: string): PageRange[] | undefined {
    try {
      this.fd ??= openSync('/proc/self/pagemap', 'r');
    } catch {
      return undefined;
    }
    const bytes = new Uint8Array(CHUNK_PAGES * 8);
    const toggles = new Uint32Array(CHUNK_PAGES);
    const native = addon();
    const ranges: PageRange[] = [];
    /** The first page of the mapped run under way, or -1 between runs. */
    let start = -1;
    const firstEntry = Number(hva / BigInt(PAGE_SIZE));
    for (let at = 0; at < pages; at += CHUNK_PAGES) {
      const n = Math.min(CHUNK_PAGES, pages - at);
      const want = n * 8;
      for (let done = 0; done < want;) {
        const got = readSync(this.fd, bytes, done, want - done, (firstEntry + at) * 8 + done);
        if (got === 0) throw new PagemapError(`/proc/self/pagemap ended at page ${at} of ${label}`);
        done += got;
      }
      // The scan in the addon: in JS it was 6-7 ms per GiB, run once per migration and cold.
      const found = native.pagemapToggles(bytes.subarray(0, want), start >= 0 ? 1 : 0, toggles);
      for (let t = 0; t < found; t++) {
        const page = at + toggles[t]!;
        if (start < 0) start = page;
        else {
          ranges.push({ firstPage: start, count: page - start });
          start = -1;
        }
      }
    }
    if (start >= 0) ranges.push({ firstPage: start, count: pages - start });
    return ranges;
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}
