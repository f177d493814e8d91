import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { gpa, MiB } from '../../../../src/arch/x86/layout.js';
import { GuestMemory } from '../../../../src/memory/guest-memory.js';
import { Interrupt, MmioReg } from '../../../../src/devices/virtio/constants.js';
import { VirtioMmioTransport, createTransportState } from '../../../../src/devices/virtio/mmio-transport.js';
import { DEFAULT_MAC, RX_BACKLOG_FRAMES, VirtioNet, netIdentity, type NetBackend } from '../../../../src/devices/virtio/virtio-net.js';
import { TestDriver, bringUp } from './test-driver.js';

class LoopBackend implements NetBackend {
  readonly sent: Uint8Array[] = [];
  deliver: (f: Uint8Array) => void = () => {};
  readonly description = 'test';
  send(frame: Uint8Array): void { this.sent.push(frame); }
  onReceive(d: (f: Uint8Array) => void): void { this.deliver = d; }
  async close(): Promise<void> {}
}

describe('virtio-net', () => {
  let mem: GuestMemory;
  beforeEach(() => { mem = GuestMemory.create(4 * MiB); });
  afterEach(() => mem.dispose());

  function device() {
    const backend = new LoopBackend();
    const t = new VirtioMmioTransport(createTransportState(netIdentity(DEFAULT_MAC)), { setLevel: () => {} }, () => {});
    const net = new VirtioNet('virtio-net@test', t, mem, backend);
    const rx = new TestDriver(mem, 8, 0x10000);
    const tx = new TestDriver(mem, 8, 0x20000);
    bringUp(t, 1n << 32n, [rx, tx]);
    return { backend, t, net, rx, tx };
  }

  it('offers its MAC and link-up status in config space', () => {
    const { t } = device();
    expect([0, 1, 2, 3, 4, 5].map((i) => t.read(MmioReg.CONFIG + i, 1))).toEqual([...DEFAULT_MAC]);
    expect(t.read(MmioReg.CONFIG + 6, 2)).toBe(1);
  });

  it('transmits each chain without its 12-byte header and returns it', () => {
    const { backend, net, tx } = device();
    const packet = new Uint8Array(12 + 60);
    packet.fill(7, 12);
    mem.write(gpa(0x40000), packet);
    // Header and frame split over two descriptors, as drivers often do.
    tx.publish(tx.chain([{ addr: 0x40000, len: 12 }, { addr: 0x4000c, len: 60 }]));
    net.notify(1);
    expect(backend.sent).toEqual([new Uint8Array(60).fill(7)]);
    expect(tx.takeUsed()).toEqual([{ id: 0, len: 0 }]);
  });

  it('receives into posted buffers with a VERSION_1 header (num_buffers 1), marked dirty; holds frames until buffers come', () => {
    const { backend, net, rx, t } = device();
    backend.deliver(Uint8Array.of(1, 2, 3)); // no buffer posted yet: held
    expect(rx.usedIdx()).toBe(0);
    mem.setLogging(true);
    mem.regions[0]!.dirty.getAndReset();
    rx.publish(rx.chain([{ addr: 0x50000, len: 2048, write: true }]));
    net.notify(0);
    expect(rx.takeUsed()).toEqual([{ id: 0, len: 15 }]);
    expect(mem.read(gpa(0x50000), 15)).toEqual(Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 2, 3));
    expect(mem.regions[0]!.dirty.dirtyAt(0x50000 / 4096)).toBe(true);
    expect(t.read(MmioReg.INTERRUPT_STATUS, 4)).toBe(Interrupt.USED_BUFFER);
  });

  it('asks the driver not to kick its receive queue while it has buffers, and to kick again once frames wait for one (VIRTQ_USED_F_NO_NOTIFY)', () => {
    const { backend, net, rx } = device();
    const usedFlags = () => mem.readU16(gpa(rx.config.used));
    expect(usedFlags()).toBe(0); // a fresh ring: kicks wanted
    rx.publish(rx.chain([{ addr: 0x50000, len: 2048, write: true }]));
    net.notify(0);
    backend.deliver(Uint8Array.of(1));
    expect(rx.takeUsed()).toHaveLength(1);
    expect(usedFlags()).toBe(1); // it found a buffer: no kicks while nothing waits
    backend.deliver(Uint8Array.of(2)); // no buffer left: the frame waits, and kicks are wanted again
    expect(usedFlags()).toBe(0);
    rx.publish(rx.chain([{ addr: 0x51000, len: 2048, write: true }]));
    net.notify(0);
    expect(rx.takeUsed()).toEqual([{ id: 1, len: 13 }]);
    expect(usedFlags()).toBe(1);
    // A buffer the driver posted without a kick (it saw NO_NOTIFY) is found when the next frame comes.
    rx.publish(rx.chain([{ addr: 0x52000, len: 2048, write: true }]));
    backend.deliver(Uint8Array.of(3));
    expect(rx.takeUsed()).toEqual([{ id: 2, len: 13 }]);
  });

  it('keeps the first frame that arrives after the driver reset and set it up, before anything else told the device of the reset', () => {
    // The guest's init resets the device (STATUS 0), posts buffers and kicks, while no frame waits;
    // the first frame must not be taken for one that predates the reset.
    const { backend, net, rx } = device();
    rx.publish(rx.chain([{ addr: 0x50000, len: 2048, write: true }]));
    net.notify(0);
    backend.deliver(Uint8Array.of(9));
    expect(rx.takeUsed()).toEqual([{ id: 0, len: 13 }]);
    expect(net.rxFrames).toBe(1);
  });

  it('drops frames beyond its backlog while the guest posts no buffers, as a NIC overruns', () => {
    const { backend, net } = device();
    for (let i = 0; i < RX_BACKLOG_FRAMES + 5; i++) backend.deliver(Uint8Array.of(i & 0xff));
    expect(net.rxDropped).toBe(5);
  });

  it('a link change updates status and ConfigGeneration and raises a config interrupt', () => {
    const { net, t } = device();
    const gen = t.read(MmioReg.CONFIG_GENERATION, 4);
    net.setLink(false);
    expect(t.read(MmioReg.CONFIG + 6, 2)).toBe(0);
    expect(t.read(MmioReg.CONFIG_GENERATION, 4)).toBe(gen + 1);
    expect(t.read(MmioReg.INTERRUPT_STATUS, 4) & Interrupt.CONFIG_CHANGE).toBe(Interrupt.CONFIG_CHANGE);
  });
});
