import { GuestMemoryError, type GuestMemory } from '../../memory/guest-memory.js';
import { Feature, Interrupt, Status } from './constants.js';
import type { TransportState, VirtioMmioTransport } from './mmio-transport.js';
import { SplitQueue, VirtqueueError, type QueuePosition } from './virtqueue.js';

/** The named, versioned state of one virtio device: its transport registers and queue positions. */
export interface VirtioDeviceState {
  version: 1;
  transport: TransportState;
  queues: QueuePosition[];
}

/**
 * What every virtio device shares, on the main thread: the queues as the driver set them up (rebuilt
 * after each device reset), completion of chains into the used ring with the interrupt, the broken
 * state a hostile guest can put the device in, in-flight accounting so a pause can drain requests,
 * and state capture for migration.
 *
 * INVARIANT: a request popped in one reset epoch is completed only in that epoch: after a reset (or a
 * restore) a late completion writes nothing into guest memory, neither data nor used ring.
 */
/** Refuses a device state of a version this tsvmm cannot read. */
export function checkStateVersion(name: string, state: VirtioDeviceState): void {
  if (state.version !== 1) throw new Error(`${name}: state version ${state.version} is not supported (this tsvmm reads version 1)`);
}

export abstract class VirtioDevice {
  private queues: (SplitQueue | undefined)[] = [];
  /** Positions to resume queues from (restored from a migration), consumed when each queue is built. */
  private resumeAt: (QueuePosition | undefined)[] = [];
  private epoch: number;
  private quiesced = false;
  private inFlight = 0;
  private drainWaiters: (() => void)[] = [];
  private reportedBroken = false;

  constructor(
    /** name@address, as migration peers compare devices and error messages name them. */
    readonly name: string,
    readonly transport: VirtioMmioTransport,
    protected readonly mem: GuestMemory,
  ) {
    this.epoch = transport.resetEpoch;
  }

  /** The driver (or a resume) says queue `q` may have new chains. */
  notify(q: number): void {
    if (this.quiesced || q >= this.transport.numQueues) return;
    this.processQueue(q);
  }

  /**
   * Virtqueue polling (QEMU's AioContext polling, poll-max-ns): watches queue `q` for up to
   * `budgetMs` for chains the driver makes available, with its kicks off meanwhile, and processes
   * them if any come. A driver that submits again within the budget skips a kick (a vCPU exit) and
   * the serving thread a wake-up. Returns whether it found any; either way kicks are on again when it
   * returns and the ring was looked at after they were (see setNotification). Only for a thread that
   * has nothing else to do meanwhile: it spins.
   */
  pollQueue(q: number, budgetMs: number): boolean {
    if (this.quiesced || q >= this.transport.numQueues) return false;
    const queue = this.queue(q);
    if (queue === undefined) return false;
    let found = false;
    this.guarded(() => {
      queue.setNotification(false);
      const deadline = performance.now() + budgetMs;
      while (queue.pending() === 0 && performance.now() < deadline) { /* spin */ }
      queue.setNotification(true);
      found = queue.pending() > 0;
    });
    if (found) this.processQueue(q);
    return found;
  }

  /** Handles what is available on queue `q`; called on notification and on resume. */
  protected abstract processQueue(q: number): void;

  /** Called when the main thread first sees that the driver reset the device. */
  protected onReset(): void {}

  /** The current reset epoch (captured with a request, checked at its completion). */
  protected currentEpoch(): number {
    this.syncEpoch();
    return this.epoch;
  }

  /** Whether the device is live (DRIVER_OK, not broken) and not paused. */
  protected get active(): boolean {
    const status = this.transport.status;
    return !this.quiesced && (status & Status.DRIVER_OK) !== 0 && (status & (Status.DEVICE_NEEDS_RESET | Status.FAILED)) === 0;
  }

  /** Queue `q` if the device is live and the driver has made it ready. */
  protected queue(q: number): SplitQueue | undefined {
    this.syncEpoch();
    if (!this.active) return undefined;
    let queue = this.queues[q];
    if (queue !== undefined) return queue;
    const config = this.transport.queueConfig(q);
    if (!config.ready) return undefined;
    const indirect = (this.transport.driverFeatures() & (1n << BigInt(Feature.RING_INDIRECT_DESC))) !== 0n;
    try {
      queue = new SplitQueue(this.mem, config, indirect, this.resumeAt[q]);
    } catch (e) {
      this.fail(e);
      return undefined;
    }
    this.queues[q] = queue;
    return queue;
  }

  /**
   * Runs `body` (pops and the handling of what was popped) and turns a malformed chain or an address
   * outside RAM into DEVICE_NEEDS_RESET instead of an exception.
   */
  protected guarded(body: () => void): void {
    try {
      body();
    } catch (e) {
      this.fail(e);
    }
  }

  /** Puts chain `head` in queue `q`'s used ring and interrupts the driver, unless its epoch is over. */
  protected complete(q: number, head: number, len: number, epoch: number): void {
    if (!this.isCurrent(epoch)) return;
    const queue = this.queues[q];
    if (queue === undefined) return;
    this.guarded(() => {
      queue.pushUsed(head, len);
      if (queue.wantsInterrupt()) this.transport.raiseInterrupt(Interrupt.USED_BUFFER);
    });
  }

  /** Whether a request of `epoch` may still write guest memory. */
  protected isCurrent(epoch: number): boolean {
    this.syncEpoch();
    return epoch === this.epoch && (this.transport.status & (Status.DEVICE_NEEDS_RESET | Status.FAILED)) === 0;
  }

  /** Counts `work` as in flight until it settles, so quiesce() can wait for it. */
  protected track(work: Promise<void>): void {
    this.inFlight++;
    void work.finally(() => {
      if (--this.inFlight === 0) for (const w of this.drainWaiters.splice(0)) w();
    });
  }

  /**
   * Stops popping new chains and resolves when every request in flight has completed. Used at the pause
   * before a migration's final state capture: each request then completes exactly once, here; the
   * chains still in the avail ring are left for the destination.
   */
  async quiesce(): Promise<void> {
    this.quiesced = true;
    if (this.inFlight > 0) await new Promise<void>((resolve) => this.drainWaiters.push(resolve));
  }

  /** Pops again, starting with whatever the driver queued while we were quiesced (or on the source). */
  resume(): void {
    this.quiesced = false;
    for (let q = 0; q < this.transport.numQueues; q++) this.processQueue(q);
  }

  get requestsInFlight(): number {
    return this.inFlight;
  }

  state(): VirtioDeviceState {
    this.syncEpoch();
    const queues: QueuePosition[] = [];
    for (let q = 0; q < this.transport.numQueues; q++) {
      queues.push(this.queues[q]?.position() ?? this.resumeAt[q] ?? { lastAvailIdx: 0, usedIdx: 0 });
    }
    return { version: 1, transport: this.transport.state(), queues };
  }

  restore(state: VirtioDeviceState): void {
    checkStateVersion(this.name, state);
    this.transport.restore(state.transport);
    this.restoreQueues(state.queues);
  }

  /**
   * The queue half of restore(), for a device whose transport registers another thread has already
   * restored (they live in shared memory): resume from `queues`, in the transport's current epoch.
   */
  restoreQueues(queues: readonly QueuePosition[]): void {
    this.epoch = this.transport.resetEpoch;
    this.queues = [];
    this.resumeAt = queues.map((p) => ({ ...p }));
    this.reportedBroken = false;
  }

  private syncEpoch(): void {
    const epoch = this.transport.resetEpoch;
    if (epoch === this.epoch) return;
    this.epoch = epoch;
    this.queues = [];
    this.resumeAt = [];
    this.reportedBroken = false;
    this.onReset();
  }

  private fail(e: unknown): void {
    if (!(e instanceof VirtqueueError) && !(e instanceof GuestMemoryError)) throw e;
    this.transport.markNeedsReset();
    if (!this.reportedBroken) {
      this.reportedBroken = true;
      process.stderr.write(`tsvmm: ${this.name}: the guest's driver broke the device (${e.message}); it needs a reset\n`);
    }
  }
}
