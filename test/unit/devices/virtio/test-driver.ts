import { gpa } from '../../../../src/arch/x86/layout.js';
import type { GuestMemory } from '../../../../src/memory/guest-memory.js';
import { DescFlag } from '../../../../src/devices/virtio/constants.js';
import type { QueueConfig } from '../../../../src/devices/virtio/mmio-transport.js';

/** A buffer of a chain as a test driver lays it out: where, how long, and whether the device writes it. */
export interface TestBuffer {
  addr: number;
  len: number;
  write?: boolean;
}

/**
 * The driver's side of a split virtqueue, written straight into guest memory the way a guest driver
 * would: descriptor table, avail ring, and the used ring read back. For unit tests of the device side.
 */
export class TestDriver {
  availIdx = 0;
  private nextDesc = 0;
  private usedSeen = 0;
  readonly config: QueueConfig;

  constructor(private readonly mem: GuestMemory, readonly size: number, base: number) {
    // Descriptor table, avail ring, used ring, each page-aligned from `base`.
    this.config = { size, ready: true, desc: base, avail: base + 0x1000 * Math.ceil((16 * size) / 0x1000), used: 0 };
    (this.config as { used: number }).used = this.config.avail + 0x1000;
  }

  /** Writes descriptor `index`. */
  desc(index: number, addr: number, len: number, flags: number, next: number): void {
    const at = this.config.desc + 16 * index;
    const b = new Uint8Array(16);
    const v = new DataView(b.buffer);
    v.setBigUint64(0, BigInt(addr), true);
    v.setUint32(8, len, true);
    v.setUint16(12, flags, true);
    v.setUint16(14, next, true);
    this.mem.write(gpa(at), b);
  }

  /** Lays out `buffers` as a chain in fresh descriptors and returns its head (does not publish it). */
  chain(buffers: TestBuffer[]): number {
    const head = this.nextDesc % this.size;
    buffers.forEach((b, i) => {
      const index = (head + i) % this.size;
      const last = i === buffers.length - 1;
      this.desc(index, b.addr, b.len, (b.write ? DescFlag.WRITE : 0) | (last ? 0 : DescFlag.NEXT), (index + 1) % this.size);
    });
    this.nextDesc += buffers.length;
    return head;
  }

  /** Puts `head` in the avail ring and bumps avail idx. */
  publish(head: number): void {
    this.mem.writeU16(gpa(this.config.avail + 4 + 2 * (this.availIdx % this.size)), head);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.mem.writeU16(gpa(this.config.avail + 2), this.availIdx);
  }

  /** Sets avail flags (VIRTQ_AVAIL_F_NO_INTERRUPT). */
  setAvailFlags(flags: number): void {
    this.mem.writeU16(gpa(this.config.avail), flags);
  }

  usedIdx(): number {
    return this.mem.readU16(gpa(this.config.used + 2));
  }

  /** Used elements not yet taken, in order. */
  takeUsed(): { id: number; len: number }[] {
    const out: { id: number; len: number }[] = [];
    const idx = this.usedIdx();
    while (this.usedSeen !== idx) {
      const at = this.config.used + 4 + 8 * (this.usedSeen % this.size);
      out.push({ id: this.mem.readU32(gpa(at)), len: this.mem.readU32(gpa(at + 4)) });
      this.usedSeen = (this.usedSeen + 1) & 0xffff;
    }
    return out;
  }
}

/** Runs the driver's initialisation (3.1.1) on `t` with `features`, setting up `drivers[q]` as queue q. */
export function bringUp(t: import('../../../../src/devices/virtio/mmio-transport.js').VirtioMmioTransport, features: bigint, drivers: TestDriver[]): number {
  const R = { STATUS: 0x70, DF_SEL: 0x24, DF: 0x20, QSEL: 0x30, QNUM: 0x38, QREADY: 0x44, DESC: 0x80, DRIVER: 0x90, DEVICE: 0xa0 };
  t.write(R.STATUS, 4, 0); // 3.1.1: a driver starts by resetting the device (the device sees a new epoch)
  t.write(R.STATUS, 4, 1);
  t.write(R.STATUS, 4, 3);
  t.write(R.DF_SEL, 4, 0);
  t.write(R.DF, 4, Number(features & 0xffff_ffffn));
  t.write(R.DF_SEL, 4, 1);
  t.write(R.DF, 4, Number(features >> 32n));
  t.write(R.STATUS, 4, 11);
  drivers.forEach((d, q) => {
    t.write(R.QSEL, 4, q);
    t.write(R.QNUM, 4, d.size);
    t.write(R.DESC, 4, d.config.desc);
    t.write(R.DRIVER, 4, d.config.avail);
    t.write(R.DEVICE, 4, d.config.used);
    t.write(R.QREADY, 4, 1);
  });
  t.write(R.STATUS, 4, 15);
  return t.read(R.STATUS, 4);
}

/** Waits (on the event loop) until `what` holds, or fails after `ms`. */
export async function until(what: () => boolean, ms = 5000): Promise<void> {
  const t0 = Date.now();
  while (!what()) {
    if (Date.now() - t0 > ms) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 1));
  }
}
