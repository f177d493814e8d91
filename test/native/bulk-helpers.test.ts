// The addon's pure bulk helpers (native/pages.cc): no system call, so no KVM needed.
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { addon } from '../../src/kvm/addon.js';

const native = addon();

describe('packPages', () => {
  const ZERO = 1;
  const DATA = 0;

  it('finds a single set byte anywhere in a page, at any offset of the view, and puts heads and data apart', () => {
    const bytes = new Uint8Array(3 * 4096 + 1).subarray(1); // an unaligned view
    const pages = Uint32Array.of(2, 0, 1);
    const out = new Uint8Array(3 + 15 + 3 * 4096);
    expect(native.packPages(bytes, 4096, pages, out, 3, 18, ZERO, DATA)).toBe(0);
    expect([...out.subarray(3, 18)]).toEqual([2, 0, 0, 0, ZERO, 0, 0, 0, 0, ZERO, 1, 0, 0, 0, ZERO]);
    for (const at of [0, 1, 31, 32, 2047, 4064, 4095]) {
      bytes.fill(0);
      bytes[4096 + at] = 0x80;
      expect(native.packPages(bytes, 4096, pages, out, 0, 15, ZERO, DATA), `byte ${at}`).toBe(1);
      expect([...out.subarray(10, 15)], `byte ${at}`).toEqual([1, 0, 0, 0, DATA]);
      expect(Buffer.from(out.subarray(15, 15 + 4096)).equals(Buffer.from(bytes.subarray(4096, 8192))), `byte ${at}`).toBe(true);
    }
  });

  it('writes the data pages one after another, in the order of their heads, skipping zero pages', () => {
    const src = new Uint8Array(4 * 4096);
    for (let i = 0; i < src.length; i++) src[i] = (i * 7 + (i >> 12)) & 0xff;
    src.fill(0, 4096, 8192); // page 1 is a zero page
    const out = new Uint8Array(20 + 4 * 4096);
    expect(native.packPages(src, 4096, Uint32Array.of(3, 1, 0, 2), out, 0, 20, ZERO, DATA)).toBe(3);
    expect([...out.subarray(0, 20)].filter((_, i) => i % 5 === 4)).toEqual([DATA, ZERO, DATA, DATA]);
    const expected = Buffer.concat([src.subarray(3 * 4096), src.subarray(0, 4096), src.subarray(2 * 4096, 3 * 4096)]);
    expect(Buffer.from(out.subarray(20, 20 + 3 * 4096)).equals(expected)).toBe(true);
  });

  it('refuses a page outside the bytes, heads that reach the data, and an out array too short for every page as data', () => {
    const bytes = new Uint8Array(2 * 4096);
    const out = new Uint8Array(10 + 2 * 4096);
    expect(() => native.packPages(bytes, 4096, Uint32Array.of(2), out, 0, 10, ZERO, DATA)).toThrow(/page 2 lies outside bytes/);
    expect(() => native.packPages(bytes, 4096, Uint32Array.of(0, 1), out, 1, 10, ZERO, DATA)).toThrow(/heads end by dataAt/);
    expect(() => native.packPages(bytes, 4096, Uint32Array.of(0, 1), out, 0, 11, ZERO, DATA)).toThrow(RangeError);
    expect(() => native.packPages(bytes, 0, Uint32Array.of(0), out, 0, 10, ZERO, DATA)).toThrow(RangeError);
  });
});

describe('clearPages', () => {
  it('writes zeros over the pages that hold a set byte, anywhere, at any offset of the view, and counts only them', () => {
    const bytes = new Uint8Array(4 * 4096 + 3).subarray(3); // an unaligned view
    expect(native.clearPages(bytes, 4096)).toBe(0);
    bytes[0] = 1;
    bytes[2 * 4096 + 4095] = 0x80;
    bytes[3 * 4096 + 33] = 7;
    expect(native.clearPages(bytes, 4096)).toBe(3);
    expect(bytes.every((b) => b === 0)).toBe(true);
  });

  it('refuses a page size of 0 and bytes that are not whole pages', () => {
    expect(() => native.clearPages(new Uint8Array(4096), 0)).toThrow(RangeError);
    expect(() => native.clearPages(new Uint8Array(4097), 4096)).toThrow(/whole pages/);
  });
});

describe('pagemapToggles', () => {
  /** pagemap entries for `mapped` (one flag per page): present (bit 63) or swapped (bit 62), with a PFN. */
  const entries = (mapped: boolean[], swappedAt = -1) => {
    const e = new BigUint64Array(mapped.length);
    mapped.forEach((m, i) => { if (m) e[i] = (i === swappedAt ? 1n << 62n : 1n << 63n) | BigInt(0x1000 + i); });
    return new Uint8Array(e.buffer);
  };
  /** The toggles of a JS scan, to compare with. */
  const reference = (mapped: boolean[], startMapped: boolean) => {
    const out: number[] = [];
    let m = startMapped;
    mapped.forEach((x, i) => { if (x !== m) { out.push(i); m = x; } });
    return out;
  };

  it('lists every change of mapped-ness, across skipped unmapped stretches, from either starting state', () => {
    const n = 300;
    const patterns: boolean[][] = [
      Array.from({ length: n }, () => false),
      Array.from({ length: n }, () => true),
      Array.from({ length: n }, (_, i) => i === 0 || i === 31 || i === 32 || i === 63 || i === 64 || i === 299),
      Array.from({ length: n }, (_, i) => i % 2 === 1),
      Array.from({ length: n }, (_, i) => i >= 100 && i < 200),
    ];
    for (const [k, p] of patterns.entries()) {
      for (const startMapped of [false, true]) {
        const out = new Uint32Array(n);
        const found = native.pagemapToggles(entries(p, 150), startMapped ? 1 : 0, out);
        expect([...out.subarray(0, found)], `pattern ${k}, start ${startMapped}`).toEqual(reference(p, startMapped));
      }
    }
  });

  it('counts a swapped page as mapped, and ignores the other bits (the PFN, soft-dirty)', () => {
    const e = new BigUint64Array([0n, 1n << 62n, (1n << 55n) | 0xfffffn, 1n << 63n]);
    const out = new Uint32Array(4);
    expect(native.pagemapToggles(new Uint8Array(e.buffer), 0, out)).toBe(3);
    expect([...out.subarray(0, 3)]).toEqual([1, 2, 3]);
  });

  it('refuses a partial entry and an out array shorter than the entries', () => {
    expect(() => native.pagemapToggles(new Uint8Array(12), 0, new Uint32Array(2))).toThrow(/whole u64 entries/);
    expect(() => native.pagemapToggles(new Uint8Array(32), 0, new Uint32Array(3))).toThrow(/an element per entry/);
  });
});

describe('xxh3Update / xxh3Digest', () => {
  const STATE_BYTES = 344;
  const xxh3 = (...pieces: Uint8Array[]): bigint => {
    const state = new Uint8Array(STATE_BYTES);
    for (const p of pieces) native.xxh3Update(state, p);
    return native.xxh3Digest(state);
  };

  it('gives the reference XXH3-64 values, short, medium and long inputs alike, and chains across calls', () => {
    // XXH3-64 with seed 0: the empty input's value is in xxHash's own sanity tests; the others were
    // computed with hash-wasm 4 (xxHash's C implementation compiled to WebAssembly). A scratch run
    // against it also matched every length 0-599 and 20 longer ones, each fed whole and in 7 ways.
    expect(xxh3(new Uint8Array(0))).toBe(0x2d06800538d394c2n);
    expect(xxh3(Buffer.from('abc'))).toBe(0x78af5f94892f3950n);
    expect(xxh3(Buffer.from('123456789'))).toBe(0x72dcb18b67a17dffn);
    expect(xxh3(new Uint8Array(32))).toBe(0xa057271c9071c99dn);
    expect(xxh3(new Uint8Array(200))).toBe(0x8f8c9188233578c2n);
    expect(xxh3(new Uint8Array(4096))).toBe(0x93d76fe148c689ban);
    expect(xxh3(Buffer.from('1234'), Buffer.from('56789'))).toBe(0x72dcb18b67a17dffn);
    expect(xxh3(new Uint8Array(7), new Uint8Array(193))).toBe(0x8f8c9188233578c2n);
  });

  it('is the same whatever the split, across its 256-byte buffer and 1 KiB blocks, and changes when any bit of a long buffer flips', () => {
    const data = createHash('sha256').update('seed').digest();
    const long = Buffer.concat(Array.from({ length: 100 }, () => data)).subarray(3); // unaligned, odd length
    const whole = xxh3(long);
    expect(whole).toBe(0x9bed38ff4232abc8n);
    for (const split of [1, 63, 64, 65, 255, 256, 257, 1023, 1024, 1025, 3000]) {
      expect(xxh3(long.subarray(0, split), long.subarray(split, split + 17), long.subarray(split + 17)), `split ${split}`).toBe(whole);
    }
    const byteByByte = new Uint8Array(STATE_BYTES);
    for (let i = 0; i < long.length; i++) native.xxh3Update(byteByByte, long.subarray(i, i + 1));
    expect(native.xxh3Digest(byteByByte)).toBe(whole);
    for (const bit of [0, 7, 8 * 1000 + 3, long.length * 8 - 1]) {
      const flipped = Buffer.from(long);
      flipped[bit >> 3]! ^= 1 << (bit & 7);
      expect(xxh3(flipped), `bit ${bit}`).not.toBe(whole);
    }
  });

  it('digests without consuming, and refuses a state that is not one', () => {
    const state = new Uint8Array(STATE_BYTES);
    native.xxh3Update(state, Buffer.from('abc'));
    expect(native.xxh3Digest(state)).toBe(native.xxh3Digest(state));
    native.xxh3Update(state, Buffer.from('def'));
    expect(native.xxh3Digest(state)).toBe(xxh3(Buffer.from('abcdef')));
    expect(() => native.xxh3Update(new Uint8Array(STATE_BYTES - 1), Buffer.from('a'))).toThrow(/state/);
    const garbled = new Uint8Array(STATE_BYTES);
    garbled[76] = 1; // buffered-bytes field beyond the 256-byte buffer
    garbled[77] = 1;
    expect(() => native.xxh3Update(garbled, Buffer.from('a'))).toThrow(RangeError);
    expect(() => native.xxh3Digest(garbled)).toThrow(RangeError);
  });
});
