import {
  BIOS_AREA_START, HIGH_MEMORY_START, LEGACY_HOLE_START, LOW_MEMORY_END, type Gpa,
} from '../arch/x86/layout.js';

/** One entry of the machine's physical memory map (what e820 and multiboot's mmap report). */
export interface MemoryMapEntry {
  readonly start: Gpa;
  readonly sizeBytes: number;
  readonly type: 'ram' | 'reserved';
}

/**
 * The memory map a PC-like machine reports for the given RAM ranges: RAM below the EBDA, the EBDA and
 * BIOS area reserved, RAM from 1 MiB, and every RAM range above. Sorted, non-overlapping.
 */
export function memoryMap(ram: readonly { start: Gpa; sizeBytes: number }[]): MemoryMapEntry[] {
  const map: MemoryMapEntry[] = [];
  for (const r of ram) {
    const end = r.start + r.sizeBytes;
    if (r.start < LEGACY_HOLE_START) {
      const lowEnd = Math.min(end, LOW_MEMORY_END);
      if (lowEnd > r.start) map.push({ start: r.start, sizeBytes: lowEnd - r.start, type: 'ram' });
      if (end > LOW_MEMORY_END) map.push({ start: LOW_MEMORY_END, sizeBytes: LEGACY_HOLE_START - LOW_MEMORY_END, type: 'reserved' });
      if (end > BIOS_AREA_START) map.push({ start: BIOS_AREA_START, sizeBytes: HIGH_MEMORY_START - BIOS_AREA_START, type: 'reserved' });
      if (end > HIGH_MEMORY_START) map.push({ start: HIGH_MEMORY_START, sizeBytes: end - HIGH_MEMORY_START, type: 'ram' });
    } else {
      map.push({ start: r.start, sizeBytes: r.sizeBytes, type: 'ram' });
    }
  }
  // Adjacent RAM ranges (a region split at MAX_REGION_BYTES) are one range to the guest.
  const merged: MemoryMapEntry[] = [];
  for (const e of map.sort((a, b) => a.start - b.start)) {
    const last = merged[merged.length - 1];
    if (last !== undefined && last.type === e.type && last.start + last.sizeBytes === e.start) {
      merged[merged.length - 1] = { ...last, sizeBytes: last.sizeBytes + e.sizeBytes };
    } else merged.push(e);
  }
  return merged;
}

/** RAM from 1 MiB up to the first hole, in bytes: multiboot's mem_upper (in KiB) and e820's big range. */
export function upperMemoryBytes(map: readonly MemoryMapEntry[]): number {
  const e = map.find((m) => m.type === 'ram' && m.start === HIGH_MEMORY_START);
  return e?.sizeBytes ?? 0;
}

