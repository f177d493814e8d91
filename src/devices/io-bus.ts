import type { BusDevice } from './bus-device.js';

export class BusError extends Error {
  override name = 'BusError';
}

interface Mapping {
  readonly base: number;
  readonly end: number; // exclusive
  readonly name: string;
  readonly device: BusDevice;
}

/** All-ones of `size` bytes: what a read of an address no device claims returns, as on a PC. */
export function allOnes(size: number): number {
  return size >= 4 ? 0xffff_ffff : (1 << (size * 8)) - 1;
}

/**
 * An address space (port I/O or MMIO) where devices claim disjoint windows. Overlapping registrations
 * are refused; accesses nobody claims read as all-ones and writes go nowhere, as on real hardware.
 */
export class IoBus {
  /** Sorted by base; windows never overlap. */
  private readonly mappings: Mapping[] = [];
  /** The last window hit: exits come in runs to the same device. */
  private last: Mapping | undefined;

  constructor(readonly name: string) {}

  register(base: number, length: number, device: BusDevice, name: string): void {
    if (!Number.isSafeInteger(base) || !Number.isSafeInteger(length) || base < 0 || length <= 0) {
      throw new BusError(`${this.name}: cannot place ${name} at ${hex(base)} with length ${length}`);
    }
    const end = base + length;
    for (const m of this.mappings) {
      if (base < m.end && m.base < end) {
        throw new BusError(
          `${this.name}: ${name} at ${hex(base)}-${hex(end - 1)} overlaps ${m.name} at ${hex(m.base)}-${hex(m.end - 1)}`,
        );
      }
    }
    this.mappings.push({ base, end, name, device });
    this.mappings.sort((a, b) => a.base - b.base);
  }

  private find(address: number): Mapping | undefined {
    const last = this.last;
    if (last !== undefined && address >= last.base && address < last.end) return last;
    let lo = 0;
    let hi = this.mappings.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const m = this.mappings[mid]!;
      if (address < m.base) hi = mid - 1;
      else if (address >= m.end) lo = mid + 1;
      else return (this.last = m);
    }
    return undefined;
  }

  read(address: number, size: number): number {
    const m = this.find(address);
    return m === undefined ? allOnes(size) : m.device.read(address - m.base, size);
  }

  write(address: number, size: number, value: number): void {
    const m = this.find(address);
    if (m !== undefined) m.device.write(address - m.base, size, value);
  }

  /** Names and windows, for `info mtree`-style diagnostics and tests. */
  describe(): { name: string; base: number; length: number }[] {
    return this.mappings.map((m) => ({ name: m.name, base: m.base, length: m.end - m.base }));
  }
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}
