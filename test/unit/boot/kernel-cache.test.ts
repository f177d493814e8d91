import { readFileSync, readdirSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { KernelCache, fileStamp } from '../../../src/boot/kernel-cache.js';
import { scratchDirs } from '../../helpers/scratch.js';

const tempDir = scratchDirs('tsvmm-kcache-');

describe('KernelCache', () => {
  it('lives in $TSVMM_CACHE_DIR, else $XDG_CACHE_HOME, else ~/.cache', () => {
    expect(KernelCache.defaultDir({ TSVMM_CACHE_DIR: '/c', XDG_CACHE_HOME: '/x', HOME: '/h' })).toBe('/c/kernels');
    expect(KernelCache.defaultDir({ XDG_CACHE_HOME: '/x', HOME: '/h' })).toBe('/x/tsvmm/kernels');
    expect(KernelCache.defaultDir({ HOME: '/h' })).toBe('/h/.cache/tsvmm/kernels');
  });

  it('keys by content: 256 bits of hex, different for any changed byte', () => {
    const a = KernelCache.key(Uint8Array.of(1, 2, 3));
    expect(a).toMatch(/^[0-9a-f]{64}$/);
    expect(KernelCache.key(Uint8Array.of(1, 2, 3))).toBe(a);
    expect(KernelCache.key(Uint8Array.of(1, 2, 4))).not.toBe(a);
  });

  it('memoises a key by file stamp: the same stamp is not hashed again, another stamp is', () => {
    const cache = new KernelCache(path.join(tempDir(), 'k'));
    const a = Uint8Array.of(1, 2, 3);
    const b = Uint8Array.of(4, 5, 6);
    expect(cache.keyOf(a, '1-2-3-4-5')).toBe(KernelCache.key(a));
    expect(readdirSync(cache.dir)).toEqual(['seen-1-2-3-4-5']);
    // Under the same stamp the memo answers (which is why a stamp must change with the content).
    expect(cache.keyOf(b, '1-2-3-4-5')).toBe(KernelCache.key(a));
    expect(cache.keyOf(b, '1-2-3-4-6')).toBe(KernelCache.key(b));
    expect(cache.keyOf(b, undefined)).toBe(KernelCache.key(b)); // no stamp: always hashed
  });

  it('stamps a file by device, inode, size, mtime and ctime', () => {
    const file = path.join(tempDir(), 'f');
    writeFileSync(file, 'x');
    const st = statSync(file, { bigint: true });
    expect(fileStamp(file)).toBe(`${st.dev}-${st.ino}-${st.size}-${st.mtimeNs}-${st.ctimeNs}`);
    expect(fileStamp(path.join(tempDir(), 'none'))).toBeUndefined();
  });

  it('gives back what it stored, only at the declared size', () => {
    const cache = new KernelCache(path.join(tempDir(), 'k'));
    const bytes = Uint8Array.from({ length: 5000 }, (_, i) => i & 0xff);
    expect(cache.lookup('ab', 5000)).toBeUndefined();
    expect(cache.store('ab', bytes)).toBe(true);
    expect(cache.lookup('ab', 5000)).toBe(path.join(cache.dir, 'vmlinux-ab'));
    expect(readFileSync(cache.lookup('ab', 5000)!).equals(Buffer.from(bytes))).toBe(true);
    expect(cache.lookup('ab', 4999)).toBeUndefined(); // a truncated or foreign file is not used
    expect(readdirSync(cache.dir)).toEqual(['vmlinux-ab']); // no temporary file left
  });

  it('is never an error: a directory it cannot make means no cache', () => {
    const file = path.join(tempDir(), 'plain-file');
    writeFileSync(file, 'x');
    const cache = new KernelCache(path.join(file, 'kernels'));
    expect(cache.store('ab', Uint8Array.of(1))).toBe(false);
    expect(cache.lookup('ab', 1)).toBeUndefined();
  });

  it('keeps the most recently used files only', () => {
    const cache = new KernelCache(tempDir(), 2);
    const old = new Date(Date.now() - 60_000);
    cache.store('a', Uint8Array.of(1));
    cache.store('b', Uint8Array.of(2));
    utimesSync(path.join(cache.dir, 'vmlinux-a'), old, old);
    utimesSync(path.join(cache.dir, 'vmlinux-b'), old, old);
    expect(cache.lookup('a', 1)).toBeDefined(); // a is used again: b is now the oldest
    cache.store('c', Uint8Array.of(3));
    expect(readdirSync(cache.dir).sort()).toEqual(['vmlinux-a', 'vmlinux-c']);
  });
});
