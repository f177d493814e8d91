import { Worker } from 'node:worker_threads';
import { addon, type NativeAddon } from '../kvm/addon.js';
import { threadScript } from '../kvm/thread-script.js';
import { KvmRunOffset } from '../kvm/kvm-run.js';
import type { BoardDescription } from '../machine/board.js';
import { Ctl, Request, State, THROTTLE_SLICE_MS, createControlBlock, postRequest, wakeParked } from './control-block.js';
import type { VcpuStop } from './exit-handler.js';
import type { VcpuThreadData, VcpuThreadExit } from './vcpu-thread.js';
import { traceOrigin } from '../machine/phase-trace.js';
import type { PrestartedThread } from './prestarted-thread.js';
import { vcpuStateBytes, vcpuStateViews, type VcpuState } from './vcpu-state.js';

/** The compiled vCPU thread body; workers always run built JavaScript (`npm install` / `npm test` build it). */
export const VCPU_THREAD_SCRIPT = threadScript('vcpu-thread', 'vcpu/vcpu-thread.js');

const ESRCH = 3;

interface VcpuHandle {
  readonly index: number;
  readonly fd: number;
  readonly control: Int32Array;
  /** The main thread's own mapping of this vCPU's kvm_run, to set immediate_exit when kicking. */
  readonly run: Uint8Array;
  worker: Worker | undefined;
  exit: Promise<VcpuThreadExit>;
  /** Where the thread reads its vCPU's state on request (see pause), and that state's views here. */
  readonly captureArea: { readonly buffer: SharedArrayBuffer; readonly state: VcpuState } | undefined;
  /** The pause epoch whose capture was asked for and still holds (no resume since), or undefined. */
  captureEpoch: number | undefined;
}

/**
 * The vCPU threads of one VM, driven from the main thread: start, pause (every vCPU outside KVM_RUN,
 * so state can be read), resume, stop. The first vCPU that stops for a reason of the guest's (debug-exit,
 * power-off, triple fault, error) stops the others, and `stopped` resolves with that reason.
 */
export class VcpuThreads {
  private readonly handles: VcpuHandle[];
  private readonly kickSignal: number;
  /** What handOver sleeps on: never notified, so only its timeout ends a nap. */
  private readonly napWord = new Int32Array(new SharedArrayBuffer(4));
  private firstStop: VcpuStop | undefined;
  private resolveStopped!: (stop: VcpuStop | undefined) => void;
  /**
   * Resolves once every vCPU thread has ended its run loop (reported, or failed), with the guest's
   * reason (undefined if stopped on request).
   */
  readonly stopped: Promise<VcpuStop | undefined>;
  private started = false;
  private pauseDepth = 0;
  private throttleTimer: NodeJS.Timeout | undefined;
  private readonly exitHook = () => this.kickAll(Request.STOP);

  constructor(
    vcpuFds: readonly number[],
    private readonly runMmapSize: number,
    private readonly board: BoardDescription,
    /** A thread already started for vCPU 0 (bin/tsvmm.cjs starts one before loading the CLI). */
    private readonly prestarted?: PrestartedThread,
    /** The MSRs a vCPU thread reads when a pause asks it to capture its state; none, no such captures. */
    private readonly msrIndices?: readonly number[],
  ) {
    const native = addon();
    this.kickSignal = native.sigrtmin() + 4;
    // The handler must exist before any kick, in every thread: sigaction is process-wide.
    native.installEmptySignalHandler(this.kickSignal);
    this.handles = vcpuFds.map((fd, index) => ({
      index,
      fd,
      control: createControlBlock(),
      run: new Uint8Array(native.mmapShared(fd, runMmapSize, 0)),
      worker: undefined,
      exit: Promise.resolve({ index, stop: undefined }),
      captureArea: msrIndices === undefined ? undefined : captureArea(msrIndices.length),
      captureEpoch: undefined,
    }));
    this.stopped = new Promise((resolve) => { this.resolveStopped = resolve; });
  }

  get count(): number {
    return this.handles.length;
  }

  start(): void {
    if (this.started) throw new Error('vCPUs already started');
    this.started = true;
    // INVARIANT: process exit joins worker threads; a thread blocked in KVM_RUN would never join, so
    // on exit every vCPU is told to stop and kicked out of the guest first.
    process.on('exit', this.exitHook);
    // A pause taken before start holds: the threads start parked.
    const initialRequest = this.pauseDepth > 0 ? Request.PAUSE : Request.RUN;
    for (const h of this.handles) {
      Atomics.store(h.control, Ctl.REQUEST, initialRequest);
      const data: VcpuThreadData = {
        index: h.index, vcpuFd: h.fd, runMmapSize: this.runMmapSize, kickSignal: this.kickSignal,
        control: h.control, board: this.board, traceOrigin: traceOrigin(),
        captureArea: h.captureArea?.buffer, msrIndices: this.msrIndices,
      };
      const worker = (h.index === 0 ? this.prestarted?.take(data) : undefined) ?? new Worker(VCPU_THREAD_SCRIPT, { workerData: data });
      h.worker = worker;
      // The thread's one message is its report, sent after its run loop returned and its kvm_run was
      // unmapped (vcpu-thread.ts): the vCPU is finished with then. Its isolate still winds down after
      // that (tens to hundreds of ms in nested KVM), which nothing needs to wait for: a process exit
      // ends it.
      h.exit = new Promise<VcpuThreadExit>((resolve) => {
        worker.on('message', (m: VcpuThreadExit) => resolve(m));
        worker.on('error', (e) => resolve({ index: h.index, stop: { kind: 'error', message: `vCPU ${h.index} thread failed: ${e.message}` } }));
        worker.on('exit', () => resolve({ index: h.index, stop: { kind: 'error', message: `vCPU ${h.index} thread ended without a report` } }));
      }).then((r) => {
        if (r.stop !== undefined && this.firstStop === undefined) {
          this.firstStop = r.stop;
          this.kickAll(Request.STOP);
        }
        return r;
      });
    }
    void Promise.all(this.handles.map((h) => h.exit)).then(() => {
      process.off('exit', this.exitHook);
      this.resolveStopped(this.firstStop);
    });
  }

  /**
   * Kicks every vCPU out of KVM_RUN and resolves when all are parked (or have ended). Pauses nest:
   * each pause() needs its resume(), and only the outermost resume() lets the vCPUs run, so a slot
   * change inside a migration's stopped phase does not restart the guest. With `captureState`, each
   * thread also reads its vCPU's state as it parks (see capturedState).
   */
  async pause(options: { readonly captureState?: boolean } = {}): Promise<void> {
    this.pauseDepth++;
    if (!this.started) return;
    const capture = options.captureState === true && this.msrIndices !== undefined;
    const epochs = this.handles.map((h) => {
      const epoch = Atomics.load(h.control, Ctl.PAUSE_EPOCH) + 1;
      // Asked before the epoch exists: a parked thread acknowledges an epoch as soon as it sees it.
      if (capture) {
        Atomics.store(h.control, Ctl.CAPTURE_EPOCH, epoch);
        h.captureEpoch = epoch;
      }
      Atomics.store(h.control, Ctl.PAUSE_EPOCH, epoch); // only this thread writes PAUSE_EPOCH
      return epoch;
    });
    this.kickAll(Request.PAUSE);
    if (spinForPauseAcks(this.handles, epochs)) return;
    await Promise.all(this.handles.map((h, i) => waitForPauseAck(h.control, epochs[i]!, i)));
  }

  /**
   * The state vCPU `index`'s thread read at the pause that asked for it (pause with captureState),
   * once it has; undefined if none was asked since the last resume, or the thread could not read it
   * all (the caller then reads the vCPU itself). A thread reads right after it acknowledges the pause,
   * so the read asked for is under way or done: this waits for it, spinning for CAPTURE_SPIN_MS (the
   * read takes ~0.1 ms on kvm_pvm) and then asleep on the word, up to CAPTURE_WAIT_MS for a thread the
   * host does not schedule (a loaded CI machine kept one from it for over 2 ms).
   * The arrays are the thread's capture area, valid only until the vCPUs resume: copy what you keep.
   */
  capturedState(index: number): VcpuState | undefined {
    const h = this.handles[index];
    if (h?.captureEpoch === undefined || h.captureArea === undefined) return undefined;
    const epoch = h.captureEpoch;
    const t0 = performance.now();
    for (;;) {
      const seen = Atomics.load(h.control, Ctl.CAPTURED_EPOCH);
      if (seen === epoch) break;
      if (Atomics.load(h.control, Ctl.STATE) === State.STOPPED) return undefined;
      const waited = performance.now() - t0;
      if (waited > CAPTURE_WAIT_MS) return undefined;
      // Bounded, so a thread that ends (it notifies STATE, not this word) is noticed.
      if (waited > CAPTURE_SPIN_MS) Atomics.wait(h.control, Ctl.CAPTURED_EPOCH, seen, 10);
    }
    return Atomics.load(h.control, Ctl.CAPTURE_OK) === 1 ? h.captureArea.state : undefined;
  }

  /**
   * Has every parked thread wait for its next request awake, for up to a few ms (Ctl.STAND_BY),
   * instead of asleep: an incoming migration's destination, about to be told to run the guest. A
   * thread on this host (kvm_pvm, where an idle CPU halts at once) took ~0.2 ms to wake for start().
   */
  standBy(): void {
    for (const h of this.handles) {
      Atomics.store(h.control, Ctl.STAND_BY, 1);
      wakeParked(h.control);
    }
  }

  /** Whether vCPU `index`'s thread is in its park (paused, or started parked and not yet let go). */
  isParked(index: number): boolean {
    return Atomics.load(this.handles[index]!.control, Ctl.STATE) === State.PAUSED;
  }

  /** Whether vCPU `index`'s thread is still asked to stand by (it clears that once it gives up). */
  isStandingBy(index: number): boolean {
    return Atomics.load(this.handles[index]!.control, Ctl.STAND_BY) === 1;
  }

  resume(): void {
    if (this.pauseDepth === 0) throw new Error('resume() without pause()');
    if (--this.pauseDepth > 0) return;
    for (const h of this.handles) h.captureEpoch = undefined;
    for (const h of this.handles) {
      if (Atomics.load(h.control, Ctl.REQUEST) !== Request.PAUSE) continue;
      postRequest(h.control, Request.RUN);
    }
  }

  /**
   * Sleeps the calling thread until every thread that stands by (standBy) has left its park, for at
   * most `ms`. For a resume() after standBy(): the threads spin for it, but one that spins on this
   * thread's CPU gets it only once this thread stops running, and what this thread does next can wait
   * while the guest cannot. It sleeps in short naps on a word no one notifies: a thread leaving its
   * park notifies STATE, and a waiter woken so took the CPU back from it at once.
   */
  handOver(ms: number): void {
    const until = performance.now() + ms;
    const waiting = () => this.handles.some((h) => Atomics.load(h.control, Ctl.STAND_BY) === 1
      && Atomics.load(h.control, Ctl.REQUEST) === Request.RUN && Atomics.load(h.control, Ctl.STATE) === State.PAUSED);
    while (waiting() && performance.now() < until) Atomics.wait(this.napWord, 0, 0, HAND_OVER_NAP_MS);
  }

  /** Stops every vCPU and resolves when every thread has ended its run loop. */
  async stop(): Promise<VcpuStop | undefined> {
    if (!this.started) {
      this.resolveStopped(undefined);
      return undefined;
    }
    this.kickAll(Request.STOP);
    return this.stopped;
  }

  get isStarted(): boolean {
    return this.started;
  }

  /** True while every started vCPU thread is parked. */
  isPaused(): boolean {
    return this.handles.every((h) => Atomics.load(h.control, Ctl.STATE) === State.PAUSED);
  }

  /** Exits handled so far by vCPU `index` (wrapping at 2^32). */
  exitCount(index: number): number {
    return Atomics.load(this.handles[index]!.control, Ctl.EXITS) >>> 0;
  }

  /** Throttle sleeps vCPU `index` has taken so far (wrapping at 2^32); see setThrottle. */
  throttleSleeps(index: number): number {
    return Atomics.load(this.handles[index]!.control, Ctl.THROTTLE_SLEEPS) >>> 0;
  }

  /** Unmaps the main thread's kvm_run views. Call after `stopped`. */
  dispose(): void {
    const native = addon();
    for (const h of this.handles) if (h.run.buffer.byteLength > 0) native.munmap(h.run.buffer as ArrayBuffer);
  }

  /**
   * Sets `request` for every vCPU and forces each out of KVM_RUN: immediate_exit covers a thread about
   * to enter, the signal one already inside (including one halted in the guest). Synchronous, so it is
   * safe in a process 'exit' handler.
   */
  private kickAll(request: number): void {
    const native = addon();
    for (const h of this.handles) {
      const c = h.control;
      if (Atomics.load(c, Ctl.STATE) === State.STOPPED) continue;
      if (Atomics.load(c, Ctl.REQUEST) === Request.STOP) continue;
      postRequest(c, request);
      if (h.run.byteLength > 0) h.run[KvmRunOffset.IMMEDIATE_EXIT] = 1;
      this.signal(c, native);
    }
  }

  /**
   * Auto-converge: every vCPU spends `percent` (0 to 99) of its time asleep from now on, 0 ending it.
   * The vCPU threads sleep by themselves (see Ctl.THROTTLE); this thread only kicks them, once per
   * run slice, never waiting for them.
   */
  setThrottle(percent: number): void {
    if (!Number.isInteger(percent) || percent < 0 || percent > 99) throw new RangeError(`throttle ${percent}%: must be 0 to 99`);
    for (const h of this.handles) Atomics.store(h.control, Ctl.THROTTLE, percent);
    if (this.throttleTimer !== undefined) clearInterval(this.throttleTimer);
    this.throttleTimer = undefined;
    if (percent === 0) return;
    this.throttleTimer = setInterval(() => {
      const native = addon();
      for (const h of this.handles) {
        if (Atomics.load(h.control, Ctl.STATE) !== State.RUNNING || Atomics.load(h.control, Ctl.REQUEST) !== Request.RUN) continue;
        if (h.run.byteLength > 0) h.run[KvmRunOffset.IMMEDIATE_EXIT] = 1;
        this.signal(h.control, native);
      }
    }, THROTTLE_SLICE_MS / (1 - percent / 100));
    this.throttleTimer.unref();
  }

  /** Sends the kick signal to a started vCPU thread (one inside KVM_RUN then returns EINTR). */
  private signal(control: Int32Array, native: NativeAddon): void {
    const tid = Atomics.load(control, Ctl.TID);
    if (tid === 0) return; // not started: it reads REQUEST before its first KVM_RUN
    try {
      native.tgkill(tid, this.kickSignal);
    } catch (e) {
      if ((e as { errno?: number }).errno !== ESRCH) throw e; // the thread already ended
    }
  }
}

/** Whether the vCPU thread behind `control` has acknowledged pause `epoch` or has ended. */
function pauseAcked(control: Int32Array, epoch: number): boolean {
  return Atomics.load(control, Ctl.STATE) === State.STOPPED || Atomics.load(control, Ctl.PAUSED_EPOCH) - epoch >= 0;
}

/**
 * Busy-waits up to PAUSE_SPIN_MS for every vCPU to acknowledge its pause; true if all did. A kicked
 * vCPU parks within ~0.1 ms, but the acknowledgement reached this thread through Atomics.waitAsync
 * (a task posted to the event loop, which sleeps in epoll) ~0.4 ms later still, on kvm_pvm: the
 * larger part of a migration's pause, which is downtime. Spinning costs this thread at most the
 * budget, and the event loop has nothing to do meanwhile that the pause is not waiting for.
 */
function spinForPauseAcks(handles: readonly { control: Int32Array }[], epochs: readonly number[]): boolean {
  const deadline = performance.now() + PAUSE_SPIN_MS;
  for (;;) {
    let all = true;
    for (let i = 0; i < handles.length && all; i++) all = pauseAcked(handles[i]!.control, epochs[i]!);
    if (all) return true;
    if (performance.now() > deadline) return false;
  }
}

/** How long pause() busy-waits for the acknowledgements before it waits without blocking. */
const PAUSE_SPIN_MS = 1;
/** handOver's nap: short beside the ~0.2 ms a spinning vCPU thread waited for the CPU it shared. */
const HAND_OVER_NAP_MS = 0.02;

/** How long capturedState() waits for a vCPU thread's capture awake, then asleep in all (see there). */
const CAPTURE_SPIN_MS = 1;
const CAPTURE_WAIT_MS = 1000;

/** A vCPU thread's capture area: a shared buffer for a state with `msrCount` MSRs, and its views. */
function captureArea(msrCount: number): { buffer: SharedArrayBuffer; state: VcpuState } {
  const buffer = new SharedArrayBuffer(vcpuStateBytes(msrCount));
  return { buffer, state: vcpuStateViews(buffer, msrCount) };
}

/**
 * Waits (without blocking the event loop) until the vCPU thread has acknowledged pause `epoch`, or
 * has ended. A pause still unanswered after PAUSE_WARN_MS is reported once on stderr with the
 * thread's control words (how the lost wake-up behind Ctl.WAKE was found).
 */
async function waitForPauseAck(control: Int32Array, epoch: number, index: number): Promise<void> {
  const t0 = Date.now();
  let warned = false;
  for (;;) {
    const acked = Atomics.load(control, Ctl.PAUSED_EPOCH);
    if (pauseAcked(control, epoch)) return;
    // Bounded: a thread that ends notifies STATE, not PAUSED_EPOCH.
    const r = Atomics.waitAsync(control, Ctl.PAUSED_EPOCH, acked, 50);
    if (r.async) await r.value;
    if (!warned && Date.now() - t0 > PAUSE_WARN_MS) {
      warned = true;
      process.stderr.write(`tsvmm: vCPU ${index} has not paused after ${PAUSE_WARN_MS / 1000} s (state ${Atomics.load(control, Ctl.STATE)}, ` +
        `request ${Atomics.load(control, Ctl.REQUEST)}, pause ${Atomics.load(control, Ctl.PAUSED_EPOCH)}/${epoch}, exits ${Atomics.load(control, Ctl.EXITS) >>> 0}); still waiting\n`);
    }
  }
}

/** A pause this slow is reported once on stderr (it is waited for all the same). */
const PAUSE_WARN_MS = 10_000;
