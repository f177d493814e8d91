// The addon's pure bulk helpers (native/pages.cc): no system call, so no KVM needed.
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { addon } from '../../src/kvm/addon.js';

const native = addon();

describe('findZeroPages', () => {
  it('finds a single set byte anywhere in a page, at any offset of the view', () => {
    const bytes = new Uint8Array(3 * 4096 + 1).subarray(1); // an unaligned view
    const pages = Uint32Array.of(2, 0, 1);
    const out = new Uint8Array(3);
    expect(native.findZeroPages(bytes, 4096, pages, out)).toBe(3);
    expect([...out]).toEqual([1, 1, 1]);
    for (const at of [0, 1, 31, 32, 2047, 4064, 4095]) {
      bytes.fill(0);
      bytes[4096 + at] = 0x80;
      expect(native.findZeroPages(bytes, 4096, pages, out), `byte ${at}`).toBe(2);
      expect([...out], `byte ${at}`).toEqual([1, 1, 0]);
    }
  });

  it('refuses a page outside the bytes and an out array too short', () => {
    const bytes = new Uint8Array(2 * 4096);
    expect(() => native.findZeroPages(bytes, 4096, Uint32Array.of(2), new Uint8Array(1))).toThrow(/page 2 lies outside bytes/);
    expect(() => native.findZeroPages(bytes, 4096, Uint32Array.of(0, 1), new Uint8Array(1))).toThrow(RangeError);
    expect(() => native.findZeroPages(bytes, 0, Uint32Array.of(0), new Uint8Array(1))).toThrow(RangeError);
  });
});

describe('crc32c', () => {
  it('gives the CRC-32C check value and chains across calls', () => {
    // The standard check value: CRC-32C("123456789") = 0xE3069283 (RFC 3720, B.4 and the CRC catalogue).
    expect(native.crc32c(0, Buffer.from('123456789'))).toBe(0xe3069283);
    expect(native.crc32c(native.crc32c(0, Buffer.from('12345')), Buffer.from('6789'))).toBe(0xe3069283);
    expect(native.crc32c(0, new Uint8Array(0))).toBe(0);
    // 32 zero bytes, RFC 3720 B.4.
    expect(native.crc32c(0, new Uint8Array(32))).toBe(0x8a9136aa);
  });

  it('changes when any bit of a long buffer flips, whatever the split', () => {
    const data = createHash('sha256').update('seed').digest();
    const long = Buffer.concat(Array.from({ length: 100 }, () => data)).subarray(3); // unaligned, odd length
    const whole = native.crc32c(0, long);
    expect(native.crc32c(native.crc32c(0, long.subarray(0, 1001)), long.subarray(1001))).toBe(whole);
    for (const bit of [0, 7, 8 * 1000 + 3, long.length * 8 - 1]) {
      const flipped = Buffer.from(long);
      flipped[bit >> 3]! ^= 1 << (bit & 7);
      expect(native.crc32c(0, flipped), `bit ${bit}`).not.toBe(whole);
    }
  });
});
