import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { gpa, MiB } from '../../../../src/arch/x86/layout.js';
import { GuestMemory } from '../../../../src/memory/guest-memory.js';
import { DescFlag } from '../../../../src/devices/virtio/constants.js';
import { SplitQueue, VirtqueueError, gatherReadable, scatterWritable } from '../../../../src/devices/virtio/virtqueue.js';
import { TestDriver } from './test-driver.js';

// The device side of a split virtqueue over real guest memory (an anonymous mapping through the addon; no KVM).
describe('SplitQueue', () => {
  let mem: GuestMemory;
  beforeEach(() => { mem = GuestMemory.create(4 * MiB); });
  afterEach(() => mem.dispose());

  it('pops chains in avail order with readable then writable buffers, and returns them through the used ring', () => {
    const d = new TestDriver(mem, 8, 0x10000);
    const q = new SplitQueue(mem, d.config, false);
    expect(q.pop()).toBeUndefined();
    mem.write(gpa(0x20000), Uint8Array.of(1, 2, 3, 4));
    const a = d.chain([{ addr: 0x20000, len: 4 }, { addr: 0x21000, len: 100, write: true }]);
    const b = d.chain([{ addr: 0x22000, len: 10, write: true }]);
    d.publish(b);
    d.publish(a);
    const first = q.pop()!;
    expect(first).toEqual({ head: b, readable: [], writable: [{ addr: 0x22000, len: 10 }], readableBytes: 0, writableBytes: 10 });
    const second = q.pop()!;
    expect(second.head).toBe(a);
    expect(gatherReadable(mem, second)).toEqual(Uint8Array.of(1, 2, 3, 4));
    expect(scatterWritable(mem, second, Uint8Array.of(9, 9))).toBe(2);
    expect(mem.read(gpa(0x21000), 2)).toEqual(Uint8Array.of(9, 9));
    expect(q.pop()).toBeUndefined();
    q.pushUsed(a, 2);
    q.pushUsed(b, 0);
    expect(d.takeUsed()).toEqual([{ id: a, len: 2 }, { id: b, len: 0 }]);
  });

  it('wraps the free-running 16-bit indices around', () => {
    const d = new TestDriver(mem, 4, 0x10000);
    // Start both sides just below the wrap, as after 65534 requests.
    d.availIdx = 0xfffe;
    mem.writeU16(gpa(d.config.avail + 2), 0xfffe);
    mem.writeU16(gpa(d.config.used + 2), 0xfffe);
    (d as unknown as { usedSeen: number }).usedSeen = 0xfffe;
    const q = new SplitQueue(mem, d.config, false, { lastAvailIdx: 0xfffe, usedIdx: 0xfffe });
    const heads: number[] = [];
    for (let i = 0; i < 4; i++) {
      const h = d.chain([{ addr: 0x30000 + i * 0x100, len: 16, write: true }]);
      heads.push(h);
      d.publish(h);
    }
    expect(d.availIdx).toBe(2);
    for (const h of heads) {
      const c = q.pop()!;
      expect(c.head).toBe(h);
      q.pushUsed(c.head, 16);
    }
    expect(q.pop()).toBeUndefined();
    expect(q.position()).toEqual({ lastAvailIdx: 2, usedIdx: 2 });
    expect(d.takeUsed().map((u) => u.id)).toEqual(heads);
  });

  it('follows an indirect table when the feature was negotiated, and refuses it otherwise', () => {
    const d = new TestDriver(mem, 8, 0x10000);
    const table = 0x40000;
    const entries = [
      [0x41000, 16, DescFlag.NEXT, 1], [0x42000, 512, DescFlag.NEXT | DescFlag.WRITE, 2], [0x43000, 1, DescFlag.WRITE, 0],
    ] as const;
    entries.forEach(([addr, len, flags, next], i) => {
      const b = new DataView(new ArrayBuffer(16));
      b.setBigUint64(0, BigInt(addr), true);
      b.setUint32(8, len, true);
      b.setUint16(12, flags, true);
      b.setUint16(14, next, true);
      mem.write(gpa(table + 16 * i), new Uint8Array(b.buffer));
    });
    d.desc(0, table, 48, DescFlag.INDIRECT, 0);
    d.publish(0);
    const c = new SplitQueue(mem, d.config, true).pop()!;
    expect(c.readable).toEqual([{ addr: 0x41000, len: 16 }]);
    expect(c.writable).toEqual([{ addr: 0x42000, len: 512 }, { addr: 0x43000, len: 1 }]);
    expect(() => new SplitQueue(mem, d.config, false).pop()).toThrow(/INDIRECT_DESC was not negotiated/);
  });

  describe('a hostile driver gets a VirtqueueError, never a crash or an access outside RAM', () => {
    const cases: [string, (d: TestDriver) => void, RegExp][] = [
      ['a chain that loops', (d) => { d.desc(0, 0x20000, 8, DescFlag.NEXT, 1); d.desc(1, 0x20000, 8, DescFlag.NEXT, 0); d.publish(0); }, /a loop/],
      ['a chain that links to itself', (d) => { d.desc(3, 0x20000, 8, DescFlag.NEXT, 3); d.publish(3); }, /a loop/],
      ['a buffer outside RAM', (d) => { d.desc(0, 8 * MiB, 8, 0, 0); d.publish(0); }, /not inside guest RAM/],
      ['a buffer running off the end of RAM', (d) => { d.desc(0, 4 * MiB - 4, 8, 0, 0); d.publish(0); }, /not inside guest RAM/],
      ['an oversized length', (d) => { d.desc(0, 0x20000, 0xffff_ffff, 0, 0); d.publish(0); }, /not inside guest RAM/],
      ['an address above 2^53', (d) => { d.desc(0, Number.MAX_SAFE_INTEGER, 8, 0, 0); d.publish(0); }, /not inside guest RAM/],
      ['a head outside the queue', (d) => { d.publish(200); }, /outside the queue/],
      ['a next outside the table', (d) => { d.desc(0, 0x20000, 8, DescFlag.NEXT, 99); d.publish(0); }, /outside its table/],
      ['a readable buffer after a writable one', (d) => { d.desc(0, 0x20000, 8, DescFlag.NEXT | DescFlag.WRITE, 1); d.desc(1, 0x21000, 8, 0, 0); d.publish(0); }, /readable buffer after/],
      ['an avail idx too far ahead', (d) => { mem.writeU16(gpa(d.config.avail + 2), 100); }, /more than the queue/],
      ['an indirect table of bad length', (d) => { d.desc(0, 0x40000, 20, DescFlag.INDIRECT, 0); d.publish(0); }, /not a positive multiple/],
      ['an indirect table outside RAM', (d) => { d.desc(0, 16 * MiB, 32, DescFlag.INDIRECT, 0); d.publish(0); }, /not inside guest RAM/],
      ['nested indirect tables', (d) => {
        const inner = new DataView(new ArrayBuffer(16));
        inner.setBigUint64(0, 0x40000n, true);
        inner.setUint32(8, 16, true);
        inner.setUint16(12, DescFlag.INDIRECT, true);
        mem.write(gpa(0x40000), new Uint8Array(inner.buffer));
        d.desc(0, 0x40000, 16, DescFlag.INDIRECT, 0);
        d.publish(0);
      }, /inside an indirect table/],
      ['a loop inside an indirect table', (d) => {
        const e = new DataView(new ArrayBuffer(32));
        e.setBigUint64(0, 0x41000n, true); e.setUint32(8, 8, true); e.setUint16(12, DescFlag.NEXT, true); e.setUint16(14, 1, true);
        e.setBigUint64(16, 0x41000n, true); e.setUint32(24, 8, true); e.setUint16(28, DescFlag.NEXT, true); e.setUint16(30, 0, true);
        mem.write(gpa(0x40000), new Uint8Array(e.buffer));
        d.desc(0, 0x40000, 32, DescFlag.INDIRECT, 0);
        d.publish(0);
      }, /a loop/],
    ];
    it.each(cases)('%s', (_name, setup, message) => {
      const d = new TestDriver(mem, 8, 0x10000);
      setup(d);
      const q = new SplitQueue(mem, d.config, true);
      const error = (() => { try { q.pop(); } catch (e) { return e; } return undefined; })();
      expect(error).toBeInstanceOf(VirtqueueError);
      expect((error as Error).message).toMatch(message);
    });

    it('rings outside RAM or misaligned are refused when the queue is built', () => {
      expect(() => new SplitQueue(mem, { size: 8, ready: true, desc: 4 * MiB - 64, avail: 0x1000, used: 0x2000 }, false)).toThrow(VirtqueueError);
      expect(() => new SplitQueue(mem, { size: 8, ready: true, desc: 0x1008, avail: 0x2000, used: 0x3000 }, false)).toThrow(/misaligned/);
      expect(() => new SplitQueue(mem, { size: 0, ready: true, desc: 0x1000, avail: 0x2000, used: 0x3000 }, false)).toThrow(/queue size/);
    });
  });

  it('INVARIANT B: used-ring writes are marked dirty while logging', () => {
    const d = new TestDriver(mem, 8, 0x10000);
    const q = new SplitQueue(mem, d.config, false);
    d.publish(d.chain([{ addr: 0x20000, len: 8, write: true }]));
    const c = q.pop()!;
    mem.setLogging(true);
    mem.regions[0]!.dirty.getAndReset();
    scatterWritable(mem, c, Uint8Array.of(1));
    q.pushUsed(c.head, 1);
    const dirty = mem.regions[0]!.dirty;
    expect(dirty.dirtyAt(0x20000 / 4096)).toBe(true);
    expect(dirty.dirtyAt(d.config.used / 4096)).toBe(true);
    expect(dirty.count()).toBe(2);
  });

  it('honours VIRTQ_AVAIL_F_NO_INTERRUPT', () => {
    const d = new TestDriver(mem, 8, 0x10000);
    const q = new SplitQueue(mem, d.config, false);
    expect(q.wantsInterrupt()).toBe(true);
    d.setAvailFlags(1);
    expect(q.wantsInterrupt()).toBe(false);
  });
});
