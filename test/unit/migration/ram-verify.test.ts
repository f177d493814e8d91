// VERIFY: RAM hashed per 2 MiB on both sides, mismatches named.
import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../../../src/memory/guest-memory.js';
import { VERIFY_CHUNK_BYTES, hashRegions, verifyMismatches } from '../../../src/migration/ram-verify.js';

describe('RAM verify', () => {
  it('verify names exactly the 2 MiB ranges that differ', async () => {
    const a = { start: 0, sizeBytes: 6 * 1024 * 1024, bytes: new Uint8Array(6 * 1024 * 1024) };
    const b = { ...a, bytes: new Uint8Array(a.bytes) };
    b.bytes[2 * 1024 * 1024 + 5] = 1;
    expect(verifyMismatches([a], await hashRegions([a]), await hashRegions([a]))).toEqual([]);
    expect(verifyMismatches([a], await hashRegions([a]), await hashRegions([b]))).toEqual(['0x200000-0x3fffff']);
  });

  it('chunks known to be zero hash as zeros without being read: the same hashes as reading them, and the claim is trusted', async () => {
    const m = GuestMemory.create(9 * 1024 * 1024); // the last chunk is 1 MiB
    try {
      m.write((3 * 1024 * 1024) as never, Uint8Array.of(7)); // chunk 1
      const zeroChunks = m.knownZeroChunks(VERIFY_CHUNK_BYTES);
      expect([...zeroChunks[0]!]).toEqual([1, 0, 1, 1, 1]);
      expect(await hashRegions(m.regions, { zeroChunks })).toEqual(await hashRegions(m.regions));
      // A wrong claim is not checked: the chunk's data goes unseen, and verify would report it.
      expect(verifyMismatches(m.regions, await hashRegions(m.regions), await hashRegions(m.regions, { zeroChunks: [Uint8Array.of(1, 1, 1, 1, 1)] }))).toEqual(['0x200000-0x3fffff']);
    } finally {
      m.dispose();
    }
  });
});
