import { describe, expect, it } from 'vitest';
import { BusError, IoBus } from '../../../src/devices/io-bus.js';
import type { BusDevice } from '../../../src/devices/bus-device.js';

class Recorder implements BusDevice {
  writes: [number, number, number][] = [];
  read(offset: number, size: number): number { return 0x100 + offset + size; }
  write(offset: number, size: number, value: number): void { this.writes.push([offset, size, value]); }
}

describe('IoBus', () => {
  it('dispatches by offset within the device window', () => {
    const bus = new IoBus('pio');
    const a = new Recorder();
    const b = new Recorder();
    bus.register(0x3f8, 8, a, 'uart');
    bus.register(0xf4, 4, b, 'debug');
    expect(bus.read(0x3fd, 1)).toBe(0x100 + 5 + 1);
    bus.write(0xf6, 2, 0xbeef);
    expect(b.writes).toEqual([[2, 2, 0xbeef]]);
    expect(a.writes).toEqual([]);
  });

  it('reads all-ones where nothing is mapped, and drops writes there', () => {
    const bus = new IoBus('pio');
    bus.register(0x3f8, 8, new Recorder(), 'uart');
    expect(bus.read(0x80, 1)).toBe(0xff);
    expect(bus.read(0x80, 2)).toBe(0xffff);
    expect(bus.read(0x80, 4)).toBe(0xffff_ffff);
    expect(bus.read(0x400, 1)).toBe(0xff); // just past the window
    bus.write(0x80, 1, 1);
  });

  it('refuses overlapping windows and names both devices', () => {
    const bus = new IoBus('MMIO');
    bus.register(0x1000, 0x100, new Recorder(), 'first');
    expect(() => bus.register(0x10ff, 2, new Recorder(), 'second')).toThrow(BusError);
    expect(() => bus.register(0x0f00, 0x101, new Recorder(), 'second')).toThrow(/second .* overlaps first/);
    bus.register(0x1100, 0x10, new Recorder(), 'adjacent'); // touching is not overlapping
    expect(bus.describe().map((d) => d.name)).toEqual(['first', 'adjacent']);
  });

  it('refuses empty or negative windows', () => {
    const bus = new IoBus('pio');
    expect(() => bus.register(0x10, 0, new Recorder(), 'empty')).toThrow(BusError);
    expect(() => bus.register(-1, 4, new Recorder(), 'negative')).toThrow(BusError);
  });

  it('finds the right device among many (binary search and last-hit cache agree)', () => {
    const bus = new IoBus('pio');
    const devices = Array.from({ length: 50 }, () => new Recorder());
    devices.forEach((d, i) => bus.register(i * 16, 8, d, `d${i}`));
    for (let i = 49; i >= 0; i--) bus.write(i * 16 + 3, 1, i);
    devices.forEach((d, i) => expect(d.writes).toEqual([[3, 1, i]]));
    expect(bus.read(26, 1)).toBe(0xff); // in the gap between d1 (16-23) and d2 (32-39)
  });
});
