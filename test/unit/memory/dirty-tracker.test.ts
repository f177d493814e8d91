// RegionDirtyPages: a sync's result counts its bits when first asked, not when the sync fills it.
import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../../../src/memory/guest-memory.js';
import { RegionDirtyPages } from '../../../src/memory/dirty-tracker.js';

describe('RegionDirtyPages', () => {
  it('counts the set bits of its bitmap when first asked, and again after the tracker refills it', () => {
    const memory = GuestMemory.create(4 * 1024 * 1024);
    try {
      const bitmap = new Uint32Array(memory.regions[0]!.dirty.words.length);
      const syncs = { count: 1 };
      const result = new RegionDirtyPages(memory.regions[0]!, bitmap, syncs);
      bitmap[0] = 0b1011;
      bitmap[5] = 0x8000_0000;
      expect(result.pages).toBe(4);
      bitmap[1] = 0xffff_ffff; // a refill the result was not told of: the count stands
      expect(result.pages).toBe(4);
      syncs.count++; // the tracker refilled the set
      expect(result.pages).toBe(36);
    } finally {
      memory.dispose();
    }
  });
});
