/**
 * The body of the fd watcher thread (a worker_threads worker): poll(2) over the VM's queue-notify
 * eventfds and tap fds, forever, posting what became ready to the main thread. See fd-watcher.ts for
 * why this is a thread of its own.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { addon } from '../../kvm/addon.js';
import { Errno, Poll } from '../../kvm/constants.js';
import type { KvmError } from '../../kvm/kvm-error.js';

export interface FdWatcherThreadData {
  /** The watched fds, in the order the main thread's handlers are indexed. */
  readonly fds: readonly { fd: number; kind: 'counter' | 'frames' }[];
  /** An eventfd the main thread writes to end the thread. */
  readonly stopFd: number;
}

/** What the thread posts: counters that fired (by index), or one frame read from a tap fd. */
export type FdWatcherMessage =
  | { readonly kind: 'ready'; readonly indices: number[] }
  | { readonly kind: 'frame'; readonly index: number; readonly frame: Uint8Array }
  | { readonly kind: 'error'; readonly message: string };

/** A tap frame is at most 64 KiB (with IFF_NO_PI and no offloads, far less: the MTU plus 14 bytes). */
const MAX_FRAME_BYTES = 65536;

function main(data: FdWatcherThreadData): void {
  const native = addon();
  const all = [...data.fds, { fd: data.stopFd, kind: 'counter' as const }];
  const pollfds = new Uint8Array(8 * all.length);
  const v = new DataView(pollfds.buffer);
  all.forEach((e, i) => {
    v.setInt32(8 * i, e.fd, true);
    v.setInt16(8 * i + 4, Poll.IN, true);
  });
  const counter = new Uint8Array(8);
  const stopIndex = all.length - 1;
  for (;;) {
    try {
      native.poll(pollfds, -1);
    } catch (e) {
      if ((e as KvmError).errno === Errno.EINTR) continue;
      throw e;
    }
    const ready: number[] = [];
    for (let i = 0; i < all.length; i++) {
      const revents = v.getInt16(8 * i + 6, true);
      if (revents === 0) continue;
      if (i === stopIndex) return;
      if (revents & (Poll.ERR | Poll.HUP | Poll.NVAL)) {
        throw new Error(`fd ${all[i]!.fd} failed while being watched (poll revents 0x${revents.toString(16)})`);
      }
      try {
        if (all[i]!.kind === 'counter') {
          native.read(all[i]!.fd, counter); // reading resets the eventfd's counter
          ready.push(i);
        } else {
          const frame = new Uint8Array(MAX_FRAME_BYTES);
          const n = native.read(all[i]!.fd, frame);
          const copy = frame.slice(0, n);
          parentPort!.postMessage({ kind: 'frame', index: i, frame: copy } satisfies FdWatcherMessage, [copy.buffer]);
        }
      } catch (e) {
        if ((e as KvmError).errno !== Errno.EAGAIN) throw e;
      }
    }
    if (ready.length > 0) parentPort!.postMessage({ kind: 'ready', indices: ready } satisfies FdWatcherMessage);
  }
}

if (parentPort !== null) {
  try {
    main(workerData as FdWatcherThreadData);
  } catch (e) {
    parentPort.postMessage({ kind: 'error', message: e instanceof Error ? e.message : String(e) } satisfies FdWatcherMessage);
  }
}
