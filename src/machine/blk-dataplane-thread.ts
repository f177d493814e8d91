/**
 * The body of a virtio-blk dataplane thread (see blk-dataplane.ts): it owns one VirtioBlk, waits in
 * poll(2) on the queue's ioeventfd and on a control eventfd, serves every request the driver made
 * available with synchronous I/O straight from this thread, and answers the main thread's control
 * messages (quiesce, resume, stop) in order.
 */
import { parentPort, receiveMessageOnPort, workerData, type MessagePort } from 'node:worker_threads';
import { addon } from '../kvm/addon.js';
import { Errno, Poll } from '../kvm/constants.js';
import type { KvmError } from '../kvm/kvm-error.js';
import { GuestMemory, type SharedGuestMemory } from '../memory/guest-memory.js';
import { SyncFdBlockBackend } from '../devices/virtio/block-backend.js';
import { signalEventfd } from '../devices/virtio/fd-watcher.js';
import { VirtioMmioTransport } from '../devices/virtio/mmio-transport.js';
import { VirtioBlk } from '../devices/virtio/virtio-blk.js';
import type { VirtioDeviceState } from '../devices/virtio/virtio-device.js';
import type { QueuePosition } from '../devices/virtio/virtqueue.js';
import { KvmIrqLine } from './board.js';

export interface BlkDataplaneThreadData {
  readonly name: string;
  readonly memory: SharedGuestMemory;
  /** The transport's register file (the vCPU threads' and the main thread's too). */
  readonly transport: Int32Array;
  readonly vmFd: number;
  readonly gsi: number;
  readonly notifyFd: number;
  /** Signalled by the main thread after each control message it posts. */
  readonly ctlFd: number;
  readonly disk: { readonly fd: number; readonly sizeBytes: number; readonly readOnly: boolean; readonly id: string };
  /** Queue positions of a restored state (its transport registers are restored already). */
  readonly restoredQueues?: readonly QueuePosition[];
}

/** Main thread -> dataplane, each followed by a signal on ctlFd. */
export type ToDataplane = { readonly kind: 'quiesce' } | { readonly kind: 'resume' } | { readonly kind: 'stop' };

/** Dataplane -> main thread. */
export type FromDataplane =
  | { readonly kind: 'quiesced'; readonly state: VirtioDeviceState }
  | { readonly kind: 'error'; readonly message: string };


/**
 * How long the thread watches the queue after a batch before it sleeps in poll(2). On kvm_pvm a 64 KiB
 * request took ~190 us of the guest's time and a 4 KiB one ~45; the guest's next submission after a
 * completion comes within tens of microseconds, and a kick costs it ~10 us of exit.
 */
const POLL_MS = 0.05;
/** Polling rounds (batches served without a kick) before the control fd is looked at again. */
const MAX_POLL_ROUNDS = 64;

function main(data: BlkDataplaneThreadData, port: MessagePort): void {
  const native = addon();
  const mem = GuestMemory.attach(data.memory);
  const transport = new VirtioMmioTransport(data.transport, new KvmIrqLine(data.vmFd, data.gsi), () => signalEventfd(data.notifyFd));
  const backend = new SyncFdBlockBackend(data.disk.fd, data.disk.sizeBytes, data.disk.readOnly, data.disk.id);
  const blk = new VirtioBlk(data.name, transport, mem, backend);
  if (data.restoredQueues !== undefined) blk.restoreQueues(data.restoredQueues);
  const post = (m: FromDataplane) => port.postMessage(m);

  const pollfds = new Uint8Array(16);
  const v = new DataView(pollfds.buffer);
  [data.notifyFd, data.ctlFd].forEach((fd, i) => {
    v.setInt32(8 * i, fd, true);
    v.setInt16(8 * i + 4, Poll.IN, true);
  });
  const counter = new Uint8Array(8);
  const drain = (fd: number): void => {
    try {
      native.read(fd, counter); // resets the eventfd's counter
    } catch (e) {
      if ((e as KvmError).errno !== Errno.EAGAIN) throw e;
    }
  };

  // One wait and what it woke for per turn of the event loop: the requests it starts settle in
  // microtasks (the backend is synchronous), so by the next turn every one has completed.
  const step = (): void => {
    try {
      native.poll(pollfds, -1);
    } catch (e) {
      if ((e as KvmError).errno !== Errno.EINTR) throw e;
      setImmediate(step);
      return;
    }
    for (let i = 0; i < 2; i++) {
      const revents = v.getInt16(8 * i + 6, true);
      if (revents & (Poll.ERR | Poll.HUP | Poll.NVAL)) throw new Error(`${data.name}: fd ${v.getInt32(8 * i, true)} failed (poll revents 0x${revents.toString(16)})`);
    }
    // A failure later in a turn (a bug, not a guest's doing: those mark the device broken) ends the
    // thread with an 'error' event on the main thread's Worker.
    if (v.getInt16(6, true) & Poll.IN) {
      drain(data.notifyFd);
      blk.notify(0);
      // While the driver keeps submitting within POLL_MS of the last batch, serve without kicks or
      // wake-ups (QEMU's IOThread polls the same way, up to 32 us by default). Bounded, so the control
      // fd is looked at between rounds; the ring needs no kick afterwards (pollQueue leaves kicks on).
      for (let round = 0; round < MAX_POLL_ROUNDS && blk.pollQueue(0, POLL_MS); round++);
    }
    if (v.getInt16(14, true) & Poll.IN) {
      drain(data.ctlFd);
      for (let m = receiveMessageOnPort(port); m !== undefined; m = receiveMessageOnPort(port)) {
        const msg = m.message as ToDataplane;
        if (msg.kind === 'stop') {
          mem.detach();
          return;
        }
        if (msg.kind === 'quiesce') void blk.quiesce().then(() => post({ kind: 'quiesced', state: blk.state() }));
        else blk.resume();
      }
    }
    setImmediate(step);
  };
  // Whatever the queue already holds (a restored guest's requests) is served first.
  blk.resume();
  setImmediate(step);
}

if (parentPort !== null) {
  const port = parentPort;
  try {
    main(workerData as BlkDataplaneThreadData, port);
  } catch (e) {
    port.postMessage({ kind: 'error', message: e instanceof Error ? e.message : String(e) } satisfies FromDataplane);
  }
}
