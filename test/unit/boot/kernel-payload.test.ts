import { describe, expect, it } from 'vitest';
import { declaredSize, payloadCompression, unpackPayload } from '../../../src/boot/kernel-payload.js';
import { compressAsKbuild, makeVmlinux } from '../../helpers/linux-images.js';
import { withoutTools } from '../../helpers/scratch.js';

describe('a bzImage payload (arch/x86/boot/compressed)', () => {
  it('is told apart by the magic numbers lib/decompress.c reads', () => {
    expect(payloadCompression(Uint8Array.of(0x1f, 0x8b, 8))).toBe('gzip');
    expect(payloadCompression(Uint8Array.of(0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00))).toBe('xz');
    expect(payloadCompression(Uint8Array.of(0x28, 0xb5, 0x2f, 0xfd))).toBe('zstd');
    expect(payloadCompression(Uint8Array.of(0x02, 0x21, 0x4c, 0x18))).toBe('lz4');
    expect(payloadCompression(Uint8Array.of(0x42, 0x5a, 0x68))).toBe('bzip2');
    expect(payloadCompression(Uint8Array.of(0x5d, 0x00, 0x00))).toBe('lzma');
    expect(payloadCompression(Uint8Array.of(0x89, 0x4c, 0x5a, 0x4f))).toBe('lzo');
    expect(payloadCompression(Uint8Array.of(0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x01))).toBeUndefined();
  });

  it('unpacks gzip, xz and zstd to the vmlinux it was made from, checked against size_append', () => {
    const vmlinux = makeVmlinux();
    for (const format of ['gzip', 'xz', 'zstd'] as const) {
      const payload = compressAsKbuild(vmlinux, format);
      expect(declaredSize(payload), format).toBe(vmlinux.length);
      expect(unpackPayload(payload), format).toEqual({ ok: true, vmlinux: expect.any(Uint8Array) });
      const r = unpackPayload(payload);
      expect(r.ok && Buffer.from(r.vmlinux).equals(Buffer.from(vmlinux)), format).toBe(true);
    }
  });

  it('refuses a damaged payload, naming the format and the tool\'s complaint', () => {
    const xz = compressAsKbuild(makeVmlinux(), 'xz');
    const flipped = Uint8Array.from(xz);
    flipped[40] ^= 0xff;
    expect(() => unpackPayload(flipped)).toThrow(/bzImage payload \(xz\) does not decompress: xz says .+: the file is damaged/);
    const wrongSize = Uint8Array.from(xz);
    wrongSize[wrongSize.length - 4] ^= 1;
    expect(() => unpackPayload(wrongSize)).toThrow(/unpacks to 4096 bytes but the image declares 409[57]: the file is damaged/);
    const gz = compressAsKbuild(makeVmlinux(), 'gzip');
    expect(() => unpackPayload(gz.subarray(0, gz.length - 100))).toThrow(/bzImage payload \(gzip\) does not decompress/);
    expect(() => unpackPayload(Uint8Array.of(0x1f, 0x8b))).toThrow(/payload is 2 bytes/);
  });

  it('leaves to the guest what no host tool unpacks, saying why', () => {
    const xz = compressAsKbuild(makeVmlinux(), 'xz');
    expect(withoutTools(() => unpackPayload(xz))).toEqual({ ok: false, reason: 'no-tool', why: 'xz is not installed (apt install xz-utils)' });
    expect(unpackPayload(Uint8Array.of(0x89, 0x4c, 0x5a, 0x4f, 0, 0, 0, 0))).toMatchObject({ ok: false, reason: 'unsupported', why: /lzo/ });
    expect(unpackPayload(new Uint8Array(16))).toMatchObject({ ok: false, reason: 'unsupported', why: /compression is not one tsvmm recognises/ });
  });
});
