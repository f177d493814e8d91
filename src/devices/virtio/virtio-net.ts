import type { GuestMemory } from '../../memory/guest-memory.js';
import type { FdWatcher } from './fd-watcher.js';
import { DeviceId, Feature, NET_HDR_SIZE, NET_S_LINK_UP, NetFeature } from './constants.js';
import type { TransportIdentity, VirtioMmioTransport } from './mmio-transport.js';
import { VirtioDevice } from './virtio-device.js';
import { gatherReadable, scatterWritable } from './virtqueue.js';

/** Where a virtio-net device's frames go and come from (udp socket, tap device). */
export interface NetBackend {
  /** Sends one Ethernet frame (no virtio header). Never blocks; a backend may drop, as a wire would. */
  send(frame: Uint8Array): void;
  /** Registers the receiver of incoming frames (called once, before the VM runs). */
  onReceive(deliver: (frame: Uint8Array) => void): void;
  /** A one-line description for messages ("udp 127.0.0.1:5555 -> 127.0.0.1:5556"). */
  readonly description: string;
  /** Registers fds Node cannot watch (a tap) with the VM's fd watcher (the main thread's event loop). */
  attach?(watcher: FdWatcher): void;
  close(): Promise<void>;
}

/** Entries per queue (QEMU's virtio-net default rx/tx queue size). */
export const NET_QUEUE_SIZE = 256;
/** Queue indices (5.1.2): receiveq1, transmitq1. */
export const RX_QUEUE = 0;
export const TX_QUEUE = 1;
/**
 * Frames held while the guest has posted no receive buffers (a NIC's receive FIFO); beyond this,
 * arriving frames are dropped, as a real NIC drops on overrun.
 */
export const RX_BACKLOG_FRAMES = 256;

/** The locally administered MAC tsvmm gives a NIC when none is named (QEMU's default OUI, 52:54:00). */
export const DEFAULT_MAC = Uint8Array.of(0x52, 0x54, 0x00, 0x12, 0x34, 0x56);

/** What the transport offers (5.1.4 struct virtio_net_config: mac[6], status u16). */
export function netIdentity(mac: Uint8Array): TransportIdentity {
  const config = new Uint8Array(8);
  config.set(mac.subarray(0, 6));
  config[6] = NET_S_LINK_UP;
  const features = (1n << BigInt(NetFeature.MAC)) | (1n << BigInt(NetFeature.STATUS)) | (1n << BigInt(Feature.RING_INDIRECT_DESC));
  return { deviceId: DeviceId.NET, numQueues: 2, queueNumMax: NET_QUEUE_SIZE, features, config };
}

/**
 * virtio-net (5.1) with one queue pair and no offloads: every frame crosses with a 12-byte
 * virtio_net_hdr of zeros (num_buffers = 1 on receive). Transmit is synchronous (the frame is copied
 * out and handed to the backend before the chain is returned); received frames are written into the
 * guest's receive buffers through GuestMemory, so they are marked dirty.
 */
export class VirtioNet extends VirtioDevice {
  private readonly backlog: Uint8Array[] = [];
  /** Frames dropped because the guest had no receive buffer and the backlog was full. */
  rxDropped = 0;
  txFrames = 0;
  rxFrames = 0;

  constructor(name: string, transport: VirtioMmioTransport, mem: GuestMemory, private readonly backend: NetBackend) {
    super(name, transport, mem);
    backend.onReceive((frame) => this.receive(frame));
  }

  /** Sets the link status the driver sees (VIRTIO_NET_S_LINK_UP), with a config-change interrupt. */
  setLink(up: boolean): void {
    this.transport.updateConfig(6, Uint8Array.of(up ? NET_S_LINK_UP : 0, 0));
  }

  protected override onReset(): void {
    this.backlog.length = 0;
  }

  protected processQueue(q: number): void {
    if (q === TX_QUEUE) this.transmit();
    else if (q === RX_QUEUE) this.deliver();
  }

  private transmit(): void {
    const queue = this.queue(TX_QUEUE);
    if (queue === undefined) return;
    const epoch = this.currentEpoch();
    this.guarded(() => {
      for (let chain = queue.pop(); chain !== undefined; chain = this.active ? queue.pop() : undefined) {
        if (chain.readableBytes > NET_HDR_SIZE) this.backend.send(gatherReadable(this.mem, chain, NET_HDR_SIZE));
        this.txFrames++;
        this.complete(TX_QUEUE, chain.head, 0, epoch);
      }
    });
  }

  private receive(frame: Uint8Array): void {
    // A reset the device has not looked at yet empties the backlog of what came before it: apply it
    // now, before this frame joins the backlog, or the first frame after a driver's start-up reset
    // (nothing else wakes the device between that reset and it) would be thrown away with the old.
    this.currentEpoch();
    if (this.backlog.length >= RX_BACKLOG_FRAMES) {
      this.rxDropped++;
      return;
    }
    this.backlog.push(frame);
    this.deliver();
  }

  /**
   * Moves backlogged frames into the guest's receive buffers while it has any.
   *
   * The driver's kicks on the receive queue are only wanted while frames wait for buffers, so they
   * are turned off whenever a buffer is found and back on when one is missing, then the ring is looked
   * at again (QEMU's virtio_net_has_buffers does the same): a guest that refills its ring after every
   * frame then costs one wake-up of the main thread less per frame.
   */
  private deliver(): void {
    if (this.backlog.length === 0) return;
    const queue = this.queue(RX_QUEUE);
    if (queue === undefined) return;
    const epoch = this.currentEpoch();
    this.guarded(() => {
      while (this.backlog.length > 0 && this.active) {
        let chain = queue.pop();
        if (chain === undefined) {
          queue.setNotification(true);
          chain = queue.pop();
          if (chain === undefined) return;
        }
        queue.setNotification(false);
        const frame = this.backlog.shift()!;
        const packet = new Uint8Array(NET_HDR_SIZE + frame.length);
        packet[10] = 1; // num_buffers (VERSION_1 header): the frame fits in this one chain
        packet.set(frame, NET_HDR_SIZE);
        // A chain too small for the frame gets what fits (the driver must post >= 1526-byte buffers).
        const written = scatterWritable(this.mem, chain, packet);
        this.rxFrames++;
        this.complete(RX_QUEUE, chain.head, written, epoch);
      }
    });
  }
}
