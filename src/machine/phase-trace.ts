/**
 * Start-up phase timestamps on stderr, to see where launch time goes (bench/launch, bench/linux-banner).
 * Off unless TSVMM_TRACE_PHASES=1; each line reads
 * `tsvmm-trace: +MS.m THREAD what (cpu C, thread T, queued Q)`, MS being milliseconds since the process
 * started (Node's performance.timeOrigin of the main thread), so lines from the vCPU threads and the
 * main thread share one clock; C, T and Q the CPU milliseconds the whole process and this thread have
 * used so far, and the milliseconds this thread has waited runnable for a CPU.
 */
import { isMainThread, workerData } from 'node:worker_threads';
import { readFileSync, writeSync } from 'node:fs';

export const TRACE_PHASES = process.env.TSVMM_TRACE_PHASES === '1';

/**
 * The main thread's time origin (epoch milliseconds). A worker's own performance.timeOrigin is its
 * start, so a vCPU thread takes the main thread's from its workerData (`traceOrigin`).
 */
const origin: number = isMainThread
  ? performance.timeOrigin
  : ((workerData as { traceOrigin?: number } | null)?.traceOrigin ?? performance.timeOrigin);

/** The value a worker needs in its workerData as `traceOrigin`. */
export function traceOrigin(): number {
  return origin;
}

/** Writes one phase line when tracing is on (synchronously: the process may be killed any moment). */
export function tracePhase(what: string): void {
  if (!TRACE_PHASES) return;
  const ms = performance.timeOrigin + performance.now() - origin;
  const thread = isMainThread ? 'main' : `worker${(workerData as { index?: number } | null)?.index ?? ''}`;
  // CPU time beside the wall clock: the process's (all its threads), this thread's, and how long
  // this thread has waited runnable for a CPU. A phase whose wall time outgrows this thread's CPU
  // time waited: for the kernel, another thread, or, queued, for another thread or process.
  const cpu = process.cpuUsage();
  const [onCpuNs, queuedNs] = threadSchedstat();
  writeSync(2, `tsvmm-trace: +${ms.toFixed(1)} ${thread} ${what} (cpu ${((cpu.user + cpu.system) / 1000).toFixed(1)}, thread ${(onCpuNs / 1e6).toFixed(1)}, queued ${(queuedNs / 1e6).toFixed(1)})\n`);
}

/** This thread's time on a CPU and waiting runnable for one, in ns (/proc/thread-self/schedstat), or NaNs. */
function threadSchedstat(): [number, number] {
  try {
    const [run, wait] = readFileSync('/proc/thread-self/schedstat', 'latin1').split(' ').map(Number);
    return [run ?? NaN, wait ?? NaN];
  } catch {
    return [NaN, NaN];
  }
}
