/**
 * Phase timestamps on stderr, to see where time goes: a launch (bench/launch, bench/linux-banner) or a
 * migration's switch-over. Off unless TSVMM_TRACE_PHASES is set.
 *
 * TSVMM_TRACE_PHASES=1: each line reads `tsvmm-trace: +MS.m THREAD what (cpu C, thread T, queued Q)`,
 * MS being milliseconds since the process started (Node's performance.timeOrigin of the main thread),
 * so lines from the vCPU threads and the main thread share one clock; C, T and Q the CPU milliseconds
 * the whole process and this thread have used so far, and the milliseconds this thread has waited
 * runnable for a CPU. Written at once.
 *
 * TSVMM_TRACE_PHASES=2: each line reads `tsvmm-trace: @EPOCH_MS THREAD what`, EPOCH_MS the wall clock
 * in milliseconds to the microsecond, so the lines of two processes (a migration's source and
 * destination on one host) share one clock. Kept in memory and written 15 ms after the first of a
 * burst, and at exit: a line of mode 1 costs a write and a read of /proc (~0.05-0.1 ms on kvm_pvm),
 * as much as the phases of a switch-over it would time.
 */
import { isMainThread, workerData } from 'node:worker_threads';
import { readFileSync, writeSync } from 'node:fs';

export const TRACE_PHASES = process.env.TSVMM_TRACE_PHASES === '1' || process.env.TSVMM_TRACE_PHASES === '2';
const BUFFERED = process.env.TSVMM_TRACE_PHASES === '2';

/** Mode 2's lines not yet written, and whether their write is scheduled. */
const buffered: string[] = [];
let flushScheduled = false;

function flushBuffered(): void {
  flushScheduled = false;
  if (buffered.length === 0) return;
  writeSync(2, buffered.join(''));
  buffered.length = 0;
}

if (BUFFERED) process.on('exit', flushBuffered);

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

/**
 * Writes one phase line when tracing is on: in mode 1 at once (the process may be killed any moment),
 * in mode 2 soon. A vCPU thread's event loop does not turn while it runs the guest, so in mode 2 its
 * lines come when it parks for long enough or ends.
 */
export function tracePhase(what: string): void {
  if (!TRACE_PHASES) return;
  const thread = isMainThread ? 'main' : `worker${(workerData as { index?: number } | null)?.index ?? ''}`;
  if (BUFFERED) {
    buffered.push(`tsvmm-trace: @${(performance.timeOrigin + performance.now()).toFixed(3)} ${thread} ${what}\n`);
    if (!flushScheduled) {
      flushScheduled = true;
      setTimeout(flushBuffered, BUFFERED_FLUSH_MS).unref();
    }
    return;
  }
  const ms = performance.timeOrigin + performance.now() - origin;
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

/** How long mode 2 gathers lines before it writes them. */
const BUFFERED_FLUSH_MS = 15;
