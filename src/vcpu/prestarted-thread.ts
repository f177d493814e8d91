/**
 * A vCPU thread started before its VM exists. A worker's start (a fresh V8 isolate and Node
 * environment, then reading and compiling its module) costs as much as the main thread's own module
 * load; started first, it overlaps loading the CLI and building the VM instead of following them.
 * The thread loads its module and waits for its VcpuThreadData as its first message (see
 * vcpu-thread.ts); VcpuThreads.start hands it over.
 *
 * This module imports nothing of tsvmm's, so bin/tsvmm.cjs can load it before the CLI.
 */
import { Worker } from 'node:worker_threads';

/** workerData of a prestarted vCPU thread. */
export interface PrestartData {
  readonly prestarted: true;
  /** The main thread's time origin, for TSVMM_TRACE_PHASES lines (see machine/phase-trace.ts). */
  readonly traceOrigin: number;
}

export function isPrestartData(data: unknown): data is PrestartData {
  return typeof data === 'object' && data !== null && (data as { prestarted?: unknown }).prestarted === true;
}

export class PrestartedThread {
  private ended = false;
  private taken = false;

  private constructor(private readonly worker: Worker) {
    // Until taken, the thread never keeps the process alive (a `run` that fails on bad input exits at
    // once), and its failures are kept rather than thrown: the VM then starts a fresh thread.
    worker.unref();
    worker.on('error', () => { this.ended = true; });
    worker.on('exit', () => { this.ended = true; });
  }

  /** Starts `script` (the vCPU thread body) waiting for its data. */
  static start(script: string): PrestartedThread {
    const data: PrestartData = { prestarted: true, traceOrigin: performance.timeOrigin };
    return new PrestartedThread(new Worker(script, { workerData: data }));
  }

  /** False once the thread was taken or has failed (take() then gives nothing). */
  get available(): boolean {
    return !this.taken && !this.ended;
  }

  /**
   * The worker, once, if it is still alive, with `data` posted to it as its vCPU's; undefined if it
   * already failed or was taken. The caller owns it from then on (it keeps the process alive again).
   */
  take(data: unknown): Worker | undefined {
    if (!this.available) return undefined;
    this.taken = true;
    this.worker.removeAllListeners();
    this.worker.ref();
    this.worker.postMessage(data);
    return this.worker;
  }
}
