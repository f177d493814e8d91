import { PAGE_SIZE, type Gpa, gpa as toGpa } from '../arch/x86/layout.js';

/**
 * Memslot arithmetic, without KVM: what a slot covers, how it splits around a range, which slots
 * overlap, whether two can merge. MemslotMap applies these plans with ioctls.
 */

/** What a slot maps: `sizeBytes` of RAM region `regionIndex`, from `regionOffset`, at guest address `gpa`. */
export interface SlotSpec {
  readonly gpa: Gpa;
  readonly sizeBytes: number;
  readonly regionIndex: number;
  readonly regionOffset: number;
  readonly readOnly: boolean;
}

export class MemslotError extends Error {
  override name = 'MemslotError';
}

const hex = (n: number) => `0x${n.toString(16)}`;
export const describeRange = (start: number, size: number) => `${hex(start)}-${hex(start + size - 1)}`;

/** Refuses a range that is empty or not page-aligned (KVM would answer EINVAL, with less to say). */
export function checkRange(what: string, start: number, sizeBytes: number): void {
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(sizeBytes) || start < 0 || sizeBytes <= 0) {
    throw new MemslotError(`${what}: ${hex(start)}+${hex(sizeBytes)} is not a valid range`);
  }
  if (start % PAGE_SIZE !== 0 || sizeBytes % PAGE_SIZE !== 0) {
    throw new MemslotError(`${what}: ${describeRange(start, sizeBytes)} is not aligned to 4 KiB pages`);
  }
}

export function overlaps(a: { gpa: number; sizeBytes: number }, start: number, sizeBytes: number): boolean {
  return a.gpa < start + sizeBytes && start < a.gpa + a.sizeBytes;
}

/** The part of `spec` inside [start, start + size), if any, keeping its flags and region mapping. */
export function clip(spec: SlotSpec, start: number, sizeBytes: number): SlotSpec | undefined {
  const from = Math.max(spec.gpa, start);
  const to = Math.min(spec.gpa + spec.sizeBytes, start + sizeBytes);
  if (to <= from) return undefined;
  return { ...spec, gpa: toGpa(from), sizeBytes: to - from, regionOffset: spec.regionOffset + (from - spec.gpa) };
}

/** `spec` cut at the edges of [start, start + size): the pieces before, inside and after. */
export function splitAround(spec: SlotSpec, start: number, sizeBytes: number): { before?: SlotSpec; inside?: SlotSpec; after?: SlotSpec } {
  const end = spec.gpa + spec.sizeBytes;
  return {
    before: clip(spec, spec.gpa, Math.max(0, Math.min(start, end) - spec.gpa)),
    inside: clip(spec, start, sizeBytes),
    after: clip(spec, start + sizeBytes, Math.max(0, end - (start + sizeBytes))),
  };
}

/** Whether `b` continues `a` in guest space and in the same region, with the same flags. */
export function mergeable(a: SlotSpec, b: SlotSpec): boolean {
  return a.regionIndex === b.regionIndex && a.readOnly === b.readOnly &&
    a.gpa + a.sizeBytes === b.gpa && a.regionOffset + a.sizeBytes === b.regionOffset;
}

/** The lowest slot number not in `used`, below `limit`. */
export function lowestFreeSlot(used: ReadonlySet<number>, limit: number): number {
  for (let s = 0; s < limit; s++) if (!used.has(s)) return s;
  throw new MemslotError(`all ${limit} KVM memory slots are in use`);
}
