import { addon } from '../../kvm/addon.js';
import type { FdWatchHandle } from '../../kvm/addon-types.js';
import { Errno } from '../../kvm/constants.js';
import type { KvmError } from '../../kvm/kvm-error.js';

/**
 * Watches file descriptors Node cannot watch itself, and calls their handlers on the main thread:
 * the ioeventfds KVM signals when the guest writes QueueNotify, and tap devices.
 *
 * Why not something in Node: fs.read on an eventfd or tap fd runs on libuv's threadpool and blocks one
 * of its 4 threads for as long as nothing arrives (a few idle queues would starve, and deadlock, the
 * disk I/O that shares the pool); net.Socket cannot wrap an eventfd (not a stream socket or pipe), and
 * a tap fd through it loses frame boundaries. So the addon adds each fd to the main thread's own event
 * loop (fdWatch: libuv's uv_poll, an epoll registration), as QEMU's main loop polls its ioeventfds:
 * a notify costs one wake-up of the thread that handles it, and no thread sits in poll(2) for it.
 * (This used to be a watcher thread in poll(2) posting to the main thread: two wake-ups and a
 * MessagePort delivery per notify. In nested KVM that thread and the message took ~1.5 ms of CPU per
 * UDP round trip of bench/virtio.) The vCPU threads are not involved: KVM signals the eventfd in the
 * kernel, and the guest continues without waiting for any of this.
 */
export class FdWatcher {
  private readonly entries: { fd: number; kind: 'counter' | 'frames'; onReady: (frame?: Uint8Array) => void }[] = [];
  /** fdWatch handles, one per entry, while started. */
  private handles: FdWatchHandle[] | undefined;

  /** An eventfd (or other counter fd): `onReady` runs on the main thread after it fired. */
  watchCounter(fd: number, onReady: () => void): void {
    this.add(fd, 'counter', onReady);
  }

  /** A packet fd (tap): each frame read from it is handed to `onFrame` on the main thread (its own copy). */
  watchFrames(fd: number, onFrame: (frame: Uint8Array) => void): void {
    this.add(fd, 'frames', (frame) => onFrame(frame!));
  }

  /**
   * Starts watching; `onError` hears of a watched fd that failed, which is then no longer watched
   * (a level-triggered error would otherwise call back on every turn of the loop).
   */
  start(onError: (message: string) => void): void {
    if (this.handles !== undefined) throw new Error('fd watcher already started');
    const native = addon();
    const handles: FdWatchHandle[] = [];
    this.handles = handles;
    const counter = new Uint8Array(8);
    const frame = new Uint8Array(MAX_FRAME_BYTES);
    this.entries.forEach((e, i) => {
      const fail = (why: string) => {
        native.fdUnwatch(handles[i]);
        onError(`fd ${e.fd} failed while being watched (${why})`);
      };
      handles.push(native.fdWatch(e.fd, (errno: number) => {
        if (errno !== 0) return fail(`poll errno ${errno}`);
        // A counter's read resets it. A frame fd gives one frame per read; while more wait it stays
        // readable and the loop calls again. (Reading until EAGAIN instead cost a thrown KvmError
        // per wake-up, more than the loop turn it saves.)
        let n: number;
        try {
          n = native.read(e.fd, e.kind === 'counter' ? counter : frame);
        } catch (err) {
          if ((err as KvmError).errno === Errno.EAGAIN) return; // a spurious wake
          return fail((err as Error).message);
        }
        if (e.kind === 'counter') e.onReady();
        else e.onReady(frame.slice(0, n));
      }));
    });
  }

  /** Stops watching every fd (before they are closed). Resolves at once; async for the callers' sake. */
  async stop(): Promise<void> {
    const handles = this.handles;
    if (handles === undefined) return;
    this.handles = undefined;
    const native = addon();
    for (const h of handles) native.fdUnwatch(h);
  }

  private add(fd: number, kind: 'counter' | 'frames', onReady: (frame?: Uint8Array) => void): void {
    if (this.handles !== undefined) throw new Error('fd watcher: add every fd before start()');
    this.entries.push({ fd, kind, onReady });
  }
}

/** A tap frame is at most 64 KiB (with IFF_NO_PI and no offloads, far less: the MTU plus 14 bytes). */
const MAX_FRAME_BYTES = 65536;

/** Adds 1 to an eventfd's counter (what KVM's ioeventfd does when the guest writes QueueNotify). */
export function signalEventfd(fd: number): void {
  addon().write(fd, ONE);
}

const ONE = new Uint8Array(new BigUint64Array([1n]).buffer);
