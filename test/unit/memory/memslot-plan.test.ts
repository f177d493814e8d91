import { describe, expect, it } from 'vitest';
import { gpa } from '../../../src/arch/x86/layout.js';
import {
  MemslotError, checkRange, clip, lowestFreeSlot, mergeable, overlaps, splitAround, type SlotSpec,
} from '../../../src/memory/memslot-plan.js';

const ram: SlotSpec = { gpa: gpa(0), sizeBytes: 0x1000_0000, regionIndex: 0, regionOffset: 0, readOnly: false };

describe('memslot arithmetic', () => {
  it('splits a slot around a hole, keeping each piece on its own host pages', () => {
    const { before, inside, after } = splitAround(ram, 0xca000, 0x3000);
    expect(before).toEqual({ ...ram, sizeBytes: 0xca000 });
    expect(inside).toEqual({ ...ram, gpa: 0xca000, sizeBytes: 0x3000, regionOffset: 0xca000 });
    expect(after).toEqual({ ...ram, gpa: 0xcd000, sizeBytes: 0x1000_0000 - 0xcd000, regionOffset: 0xcd000 });
  });

  it('splits at the edges without empty pieces', () => {
    expect(splitAround(ram, 0, 0x1000).before).toBeUndefined();
    expect(splitAround(ram, 0x1000_0000 - 0x1000, 0x1000).after).toBeUndefined();
    const moved = { ...ram, gpa: gpa(0x10_0000), regionOffset: 0x2000, sizeBytes: 0x4000 };
    expect(splitAround(moved, 0x10_1000, 0x1000).inside).toEqual({ ...moved, gpa: 0x10_1000, sizeBytes: 0x1000, regionOffset: 0x3000 });
  });

  it('clips to a range, or to nothing', () => {
    expect(clip(ram, 0x2000_0000, 0x1000)).toBeUndefined();
    expect(clip(ram, 0x0fff_f000, 0x10_0000)).toEqual({ ...ram, gpa: 0x0fff_f000, sizeBytes: 0x1000, regionOffset: 0x0fff_f000 });
  });

  it('refuses empty and misaligned ranges before any ioctl', () => {
    expect(() => checkRange('x', 0x1000, 0)).toThrow(MemslotError);
    expect(() => checkRange('x', 0x1001, 0x1000)).toThrow(/not aligned to 4 KiB/);
    expect(() => checkRange('x', 0x1000, 0x1800)).toThrow(/not aligned/);
    expect(() => checkRange('x', -4096, 0x1000)).toThrow(/not a valid range/);
    checkRange('x', 0, 0x1000);
  });

  it('detects overlap, but not adjacency', () => {
    expect(overlaps(ram, 0x0fff_f000, 0x2000)).toBe(true);
    expect(overlaps(ram, 0x1000_0000, 0x1000)).toBe(false);
  });

  it('merges only contiguous pieces of one region with equal flags', () => {
    const { before, inside, after } = splitAround(ram, 0xca000, 0x3000);
    expect(mergeable(before!, inside!)).toBe(true);
    expect(mergeable(inside!, after!)).toBe(true);
    expect(mergeable(before!, after!)).toBe(false);
    expect(mergeable(before!, { ...inside!, readOnly: true })).toBe(false);
    expect(mergeable(before!, { ...inside!, regionIndex: 1 })).toBe(false);
  });

  it('allocates the lowest free slot number and reuses freed ones', () => {
    expect(lowestFreeSlot(new Set([0, 1, 3]), 8)).toBe(2);
    expect(lowestFreeSlot(new Set(), 8)).toBe(0);
    expect(() => lowestFreeSlot(new Set([0, 1]), 2)).toThrow(/all 2 KVM memory slots are in use/);
  });
});
