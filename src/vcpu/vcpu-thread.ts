/**
 * The body of one vCPU thread (a worker_threads worker): maps its kvm_run, builds its buses and runs
 * the run loop until the guest stops or the main thread says stop. KVM_RUN blocks, so it never runs
 * on the main thread.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { addon, type NativeAddon } from '../kvm/addon.js';
import { captureVcpuStateInto, vcpuStateViews } from './vcpu-state.js';
import { buildBuses, fdTransmitter, type BoardDescription } from '../machine/board.js';
import { Ctl, State } from './control-block.js';
import { kvmRunView, type VcpuStop } from './exit-handler.js';
import { runLoop } from './run-loop.js';
import { TRACE_PHASES, tracePhase } from '../machine/phase-trace.js';
import { ExitCensus } from './exit-census.js';
import { isPrestartData } from './prestarted-thread.js';

tracePhase('vcpu thread: modules loaded');

export interface VcpuThreadData {
  readonly index: number;
  readonly vcpuFd: number;
  readonly runMmapSize: number;
  readonly kickSignal: number;
  readonly control: Int32Array;
  readonly board: BoardDescription;
  /** The main thread's time origin, for TSVMM_TRACE_PHASES lines (see machine/phase-trace.ts). */
  readonly traceOrigin: number;
  /** Where this thread reads its vCPU's state when a pause asks it to (Ctl.CAPTURE_EPOCH): vcpuStateViews over it. */
  readonly captureArea?: SharedArrayBuffer;
  /** The MSRs to read into the capture area (Vm's msrIndexList). */
  readonly msrIndices?: readonly number[];
}

/**
 * The capture a pause may ask of this thread (Ctl.CAPTURE_EPOCH): its vCPU's state, read into the
 * shared capture area once parked. The thread has just left KVM_RUN and is awake, on a CPU of its
 * own, while the main thread goes on with the rest of the stop.
 */
function captureOnRequest(native: NativeAddon, data: VcpuThreadData): ((epoch: number) => void) | undefined {
  if (data.captureArea === undefined || data.msrIndices === undefined) return undefined;
  const { msrIndices, vcpuFd, control: ctl } = data;
  const area = vcpuStateViews(data.captureArea, msrIndices.length);
  return (epoch) => {
    if (Atomics.load(ctl, Ctl.CAPTURE_EPOCH) !== epoch) return;
    let ok = false;
    try {
      ok = captureVcpuStateInto(native, vcpuFd, msrIndices, area);
    } catch {
      // The main thread reads the vCPU itself, and reports what fails then.
    }
    Atomics.store(ctl, Ctl.CAPTURE_OK, ok ? 1 : 0);
    Atomics.store(ctl, Ctl.CAPTURED_EPOCH, epoch);
    Atomics.notify(ctl, Ctl.CAPTURED_EPOCH);
  };
}

/**
 * How many times a vCPU thread reads its vCPU's state into its capture area before the guest first
 * runs, and drops it: the capture a migration's pause asks of it (captureOnRequest) then runs warm.
 * It runs once per migration, and V8 gives code inline caches only after several calls: on kvm_pvm,
 * idle 1 GiB switch-overs, 15 alternated a side, the pause (kick to parked, the capture included) took
 * a median 0.39 ms with these rounds and 0.53 without. They cost the thread 0.7-2 ms before the guest
 * first runs.
 */
const CAPTURE_REHEARSAL_ROUNDS = 10;

/**
 * Runs the capture CAPTURE_REHEARSAL_ROUNDS times (see there). Before the vCPU's first KVM_RUN: reading
 * the state of a vCPU that has not run has no effect on it, and nobody reads the capture area before a
 * pause asks for it (Ctl.CAPTURE_EPOCH).
 */
function rehearseCapture(native: NativeAddon, data: VcpuThreadData): void {
  if (data.captureArea === undefined || data.msrIndices === undefined) return;
  const area = vcpuStateViews(data.captureArea, data.msrIndices.length);
  try {
    for (let round = 0; round < CAPTURE_REHEARSAL_ROUNDS; round++) captureVcpuStateInto(native, data.vcpuFd, data.msrIndices, area);
  } catch {
    // Only a rehearsal: a capture that fails in a pause is read again, and reported, by the main thread.
  }
}

/** What a vCPU thread posts when it ends. */
export interface VcpuThreadExit {
  readonly index: number;
  readonly stop: VcpuStop | undefined; // undefined: stopped on request
}

function main(data: VcpuThreadData): VcpuThreadExit {
  const native = addon();
  const ctl = data.control;
  native.installEmptySignalHandler(data.kickSignal);
  Atomics.store(ctl, Ctl.TID, native.gettid());

  const runBuffer = native.mmapShared(data.vcpuFd, data.runMmapSize, 0);
  let deviceStop: VcpuStop | undefined;
  const census = TRACE_PHASES ? new ExitCensus(ctl) : undefined;
  const transmit = fdTransmitter(data.board.serialOutputFd);
  const buses = buildBuses(data.board, {
    requestStop: (stop) => { deviceStop ??= stop; },
    transmit: census?.wrapTransmit(transmit) ?? transmit,
  });
  census?.attach(buses);
  rehearseCapture(native, data);
  tracePhase('vcpu thread: entering the guest');
  Atomics.store(ctl, Ctl.STATE, State.RUNNING);
  Atomics.notify(ctl, Ctl.STATE);
  try {
    return { index: data.index, stop: runLoop(native, data.vcpuFd, kvmRunView(runBuffer), buses, ctl, () => deviceStop, captureOnRequest(native, data)) };
  } catch (e) {
    return { index: data.index, stop: { kind: 'error', message: e instanceof Error ? e.message : String(e) } };
  } finally {
    native.munmap(runBuffer);
    Atomics.store(ctl, Ctl.STATE, State.STOPPED);
    Atomics.notify(ctl, Ctl.STATE);
  }
}

if (parentPort !== null) {
  const port = parentPort;
  // A prestarted thread (prestarted-thread.ts) gets its vCPU as its first message.
  if (isPrestartData(workerData)) port.once('message', (data: VcpuThreadData) => port.postMessage(main(data)));
  else port.postMessage(main(workerData as VcpuThreadData));
}
