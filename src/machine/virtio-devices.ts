import {
  VIRTIO_MMIO_BASE, VIRTIO_MMIO_GSI_BASE, VIRTIO_MMIO_SLOT_SIZE, VIRTIO_MMIO_SLOTS, virtioMmioSlot,
} from '../arch/x86/layout.js';
import { addon } from '../kvm/addon.js';
import { EFD_CLOEXEC, EFD_NONBLOCK } from '../kvm/constants.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import type { BlockBackend } from '../devices/virtio/block-backend.js';
import { MmioReg } from '../devices/virtio/constants.js';
import { FdWatcher, signalEventfd } from '../devices/virtio/fd-watcher.js';
import { VirtioMmioTransport, createTransportState } from '../devices/virtio/mmio-transport.js';
import { VirtioBlk, blkIdentity } from '../devices/virtio/virtio-blk.js';
import type { VirtioDeviceState } from '../devices/virtio/virtio-device.js';
import { VirtioNet, netIdentity, type NetBackend } from '../devices/virtio/virtio-net.js';
import { KvmIrqLine } from './board.js';
import { BlkDataplane, type ServedVirtioDevice } from './blk-dataplane.js';

/** A virtio device the user asked for, with its backend already open. */
export type VirtioDeviceSpec =
  | { readonly kind: 'blk'; readonly backend: BlockBackend }
  | { readonly kind: 'net'; readonly backend: NetBackend; readonly mac: Uint8Array };

/** One occupied virtio-mmio slot as the vCPU threads build it (structured-cloneable). */
export interface VirtioSlotDescription {
  /** name@address, the device's name in migration streams and messages. */
  readonly name: string;
  readonly base: number;
  readonly gsi: number;
  /** The transport's register file, shared by every vCPU thread and the main thread. */
  readonly state: Int32Array;
  /** Per queue: the eventfd KVM signals on QueueNotify (also signalled by a notify KVM did not match). */
  readonly notifyFds: readonly number[];
}

/*
 * Interrupts go in through KVM_IRQ_LINE (KvmIrqLine), not irqfd: bench/virtio-irq measured, in nested
 * KVM, 21 us for a raise + lower pair against 43 us for one irqfd write (KVM injects an IOAPIC pin from
 * a kernel worker), and KVM_IRQ_LINE gives the level semantics virtio-mmio needs directly: the line
 * stays up until InterruptACK clears InterruptStatus, where irqfd would need a resamplefd round trip.
 */

/** KVM_IOEVENTFD_FLAG_DATAMATCH: signal only for writes of `datamatch` (the queue index). */
const KVM_IOEVENTFD_FLAG_DATAMATCH = 1 << 0;

/**
 * The VM's virtio devices on the main thread: where each sits (QEMU microvm's slots), the ioeventfds
 * that carry QueueNotify from the guest to the device without a vCPU exit, the fd watcher that hears
 * them on this thread's event loop, and pause/resume/state for migration. A disk backed by a plain file is served by a
 * dataplane thread of its own (BlkDataplane), which waits on its ioeventfd itself.
 */
export class VirtioDevices {
  private started = false;

  private constructor(
    readonly slots: readonly VirtioSlotDescription[],
    readonly devices: readonly ServedVirtioDevice[],
    private readonly backends: readonly { close(): Promise<void> }[],
    private readonly watcher: FdWatcher,
  ) {}

  static create(vmFd: number, mem: GuestMemory, specs: readonly VirtioDeviceSpec[], watcher = new FdWatcher()): VirtioDevices {
    if (specs.length > VIRTIO_MMIO_SLOTS) throw new RangeError(`the board has ${VIRTIO_MMIO_SLOTS} virtio-mmio slots; ${specs.length} devices do not fit`);
    const native = addon();
    const slots: VirtioSlotDescription[] = [];
    const devices: ServedVirtioDevice[] = [];
    const opened: number[] = [];
    try {
      specs.forEach((spec, i) => {
        const slot = virtioMmioSlot(i);
        const base = VIRTIO_MMIO_BASE + slot * VIRTIO_MMIO_SLOT_SIZE;
        const gsi = VIRTIO_MMIO_GSI_BASE + slot;
        const identity = spec.kind === 'blk' ? blkIdentity(spec.backend) : netIdentity(spec.mac);
        const name = `virtio-${spec.kind}@0x${base.toString(16)}`;
        const state = createTransportState(identity);
        const notifyFds: number[] = [];
        for (let q = 0; q < identity.numQueues; q++) {
          const fd = native.eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
          opened.push(fd);
          notifyFds.push(fd);
          native.kvmIoeventfd(vmFd, BigInt(base + MmioReg.QUEUE_NOTIFY), 4, fd, KVM_IOEVENTFD_FLAG_DATAMATCH, BigInt(q));
        }
        const transport = new VirtioMmioTransport(state, new KvmIrqLine(vmFd, gsi), (q) => signalEventfd(notifyFds[q]!));
        slots.push({ name, base, gsi, state, notifyFds });
        if (spec.kind === 'blk' && spec.backend.fd !== undefined) {
          const { fd, sizeBytes, readOnly, id } = spec.backend;
          devices.push(new BlkDataplane(name, transport, { name, transport: state, vmFd, gsi, notifyFd: notifyFds[0]!, disk: { fd, sizeBytes, readOnly, id } }, mem));
          return;
        }
        const device = spec.kind === 'blk'
          ? new VirtioBlk(name, transport, mem, spec.backend)
          : new VirtioNet(name, transport, mem, spec.backend);
        if (spec.kind === 'net') spec.backend.attach?.(watcher);
        notifyFds.forEach((fd, q) => watcher.watchCounter(fd, () => device.notify(q)));
        devices.push(device);
      });
    } catch (e) {
      for (const fd of opened) native.close(fd);
      throw e;
    }
    return new VirtioDevices(slots, devices, specs.map((s) => s.backend), watcher);
  }

  /** The devices as a migration peer compares them (name@address). */
  names(): string[] {
    return this.slots.map((s) => s.name);
  }

  /** Starts hearing notifications and serves whatever the queues already hold (a restored guest's). */
  start(): void {
    if (this.started) return;
    this.started = true;
    this.watcher.start((message) => process.stderr.write(`tsvmm: virtio notifications: ${message}\n`));
    for (const d of this.devices) {
      if (d instanceof BlkDataplane) d.start((message) => process.stderr.write(`tsvmm: ${d.name}: dataplane thread failed: ${message}\n`));
      else d.resume();
    }
  }

  /** Stops popping requests and resolves when every request in flight has completed. */
  async quiesce(): Promise<void> {
    await Promise.all(this.devices.map((d) => d.quiesce()));
  }

  resume(): void {
    if (!this.started) return;
    for (const d of this.devices) d.resume();
  }

  captureState(): { name: string; state: VirtioDeviceState }[] {
    return this.devices.map((d) => ({ name: d.name, state: d.state() }));
  }

  restoreState(need: (name: string) => unknown): void {
    for (const d of this.devices) d.restore(need(d.name) as VirtioDeviceState);
  }

  /** Stops watching the fds, then closes the backends and the eventfds. */
  async close(): Promise<void> {
    await this.watcher.stop();
    await Promise.allSettled(this.devices.map((d) => (d instanceof BlkDataplane ? d.close() : undefined)));
    await Promise.allSettled(this.backends.map((b) => b.close()));
    const native = addon();
    for (const s of this.slots) for (const fd of s.notifyFds) native.close(fd);
  }
}
