/**
 * Start-up phase timestamps on stderr, to see where launch time goes (bench/launch, bench/linux-banner).
 * Off unless TSVMM_TRACE_PHASES=1; each line reads `tsvmm-trace: +MS.m THREAD what`, MS being
 * milliseconds since the process started (Node's performance.timeOrigin of the main thread), so lines
 * from the vCPU threads and the main thread share one clock.
 */
import { isMainThread, workerData } from 'node:worker_threads';
import { writeSync } from 'node:fs';

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
  writeSync(2, `tsvmm-trace: +${ms.toFixed(1)} ${thread} ${what}\n`);
}
