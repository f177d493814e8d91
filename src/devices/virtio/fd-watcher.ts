import { Worker } from 'node:worker_threads';
import { addon } from '../../kvm/addon.js';
import { threadScript } from '../../kvm/thread-script.js';
import { EFD_CLOEXEC } from '../../kvm/constants.js';
import type { FdWatcherMessage, FdWatcherThreadData } from './fd-watcher-thread.js';

/** The compiled watcher thread body (workers run built JavaScript, like the vCPU threads). */
export const FD_WATCHER_SCRIPT = threadScript('fd-watcher-thread', 'devices/virtio/fd-watcher-thread.js');

/**
 * Watches file descriptors Node cannot watch itself, and calls their handlers on the main thread:
 * the ioeventfds KVM signals when the guest writes QueueNotify, and tap devices.
 *
 * Why a dedicated thread doing poll(2), rather than something in Node:
 * - fs.read on an eventfd or tap fd runs on libuv's threadpool and blocks one of its 4 threads for as
 *   long as nothing arrives; a few idle queues would starve the disk I/O that shares the pool (and
 *   deadlock it: a disk request cannot complete while every pool thread waits for a notify that only
 *   the guest's next request, blocked on that completion, would send).
 * - net.Socket cannot wrap an eventfd (it is not a stream socket or pipe), and a tap fd through it
 *   loses frame boundaries.
 * One thread blocked in poll over every fd costs nothing while idle, adds one postMessage per wake-up,
 * and never holds a threadpool thread. The vCPU threads are not involved at all: KVM signals the
 * eventfd in the kernel, and the guest continues without waiting for any of this.
 */
export class FdWatcher {
  private readonly entries: { fd: number; kind: 'counter' | 'frames'; onReady: (frame?: Uint8Array) => void }[] = [];
  private worker: Worker | undefined;
  private stopFd = -1;
  private readonly exitHook = () => this.signalStop();

  /** An eventfd (or other counter fd): `onReady` runs on the main thread after it fired. */
  watchCounter(fd: number, onReady: () => void): void {
    this.add(fd, 'counter', onReady);
  }

  /** A packet fd (tap): each frame read from it is handed to `onFrame` on the main thread. */
  watchFrames(fd: number, onFrame: (frame: Uint8Array) => void): void {
    this.add(fd, 'frames', (frame) => onFrame(frame!));
  }

  get watching(): number {
    return this.entries.length;
  }

  /** Starts the thread; `onError` hears of a watched fd that failed. */
  start(onError: (message: string) => void): void {
    if (this.worker !== undefined) throw new Error('fd watcher already started');
    if (this.entries.length === 0) return;
    this.stopFd = addon().eventfd(0, EFD_CLOEXEC);
    const data: FdWatcherThreadData = { fds: this.entries.map(({ fd, kind }) => ({ fd, kind })), stopFd: this.stopFd };
    const worker = new Worker(FD_WATCHER_SCRIPT, { workerData: data });
    worker.on('message', (m: FdWatcherMessage) => {
      if (m.kind === 'ready') for (const i of m.indices) this.entries[i]!.onReady();
      else if (m.kind === 'frame') this.entries[m.index]!.onReady(m.frame);
      else onError(m.message);
    });
    worker.on('error', (e) => onError(e.message));
    // The thread never keeps the process alive; at exit it is told to stop (a thread blocked in poll
    // would otherwise never join).
    worker.unref();
    process.on('exit', this.exitHook);
    this.worker = worker;
  }

  /** Stops the thread and resolves once it has ended. */
  async stop(): Promise<void> {
    const worker = this.worker;
    if (worker === undefined) return;
    this.worker = undefined;
    // Referenced again while we wait, or an otherwise idle event loop would end the process mid-await.
    worker.ref();
    const ended = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    this.signalStop();
    await ended;
    process.off('exit', this.exitHook);
    addon().close(this.stopFd);
    this.stopFd = -1;
  }

  private add(fd: number, kind: 'counter' | 'frames', onReady: (frame?: Uint8Array) => void): void {
    if (this.worker !== undefined) throw new Error('fd watcher: add every fd before start()');
    this.entries.push({ fd, kind, onReady });
  }

  private signalStop(): void {
    if (this.stopFd >= 0) signalEventfd(this.stopFd);
  }
}

/** Adds 1 to an eventfd's counter (what KVM's ioeventfd does when the guest writes QueueNotify). */
export function signalEventfd(fd: number): void {
  addon().write(fd, ONE);
}

const ONE = new Uint8Array(new BigUint64Array([1n]).buffer);
