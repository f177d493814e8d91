/**
 * The body of one vCPU thread (a worker_threads worker): maps its kvm_run, builds its buses and runs
 * KVM_RUN until the guest stops or the main thread says stop. KVM_RUN blocks, so it never runs on the
 * main thread. Pausing: the main thread sets REQUEST = PAUSE, sets immediate_exit and signals this
 * thread; KVM_RUN returns EINTR (after completing any pending I/O), and this loop parks in Atomics.wait
 * with STATE = PAUSED until REQUEST changes.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { writeSync } from 'node:fs';
import { addon } from '../kvm/addon.js';
import { KvmRunOffset } from '../kvm/kvm-run.js';
import { buildBuses, type BoardDescription } from '../machine/board.js';
import { Ctl, Request, State } from './control-block.js';
import { handleExit, kvmRunView, type VcpuStop } from './exit-handler.js';

export interface VcpuThreadData {
  readonly index: number;
  readonly vcpuFd: number;
  readonly runMmapSize: number;
  readonly kickSignal: number;
  readonly control: Int32Array;
  readonly board: BoardDescription;
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
  const run = kvmRunView(runBuffer);
  const byte = new Uint8Array(1);
  let deviceStop: VcpuStop | undefined;
  const buses = buildBuses(data.board, {
    requestStop: (stop) => { deviceStop ??= stop; },
    transmit: (b) => { byte[0] = b; writeSync(data.board.serialOutputFd, byte); },
  });

  const setState = (s: number) => { Atomics.store(ctl, Ctl.STATE, s); Atomics.notify(ctl, Ctl.STATE); };
  setState(State.RUNNING);
  try {
    for (;;) {
      const request = Atomics.load(ctl, Ctl.REQUEST);
      if (request === Request.STOP) return { index: data.index, stop: undefined };
      if (request === Request.PAUSE) {
        run.bytes[KvmRunOffset.IMMEDIATE_EXIT] = 0;
        setState(State.PAUSED);
        while (Atomics.load(ctl, Ctl.REQUEST) === Request.PAUSE) Atomics.wait(ctl, Ctl.REQUEST, Request.PAUSE);
        setState(State.RUNNING);
        continue;
      }
      if (native.kvmRun(data.vcpuFd) !== 0) {
        // EINTR: a kick. If the request was withdrawn meanwhile, the immediate_exit it left must not
        // keep failing every entry.
        if (Atomics.load(ctl, Ctl.REQUEST) === Request.RUN) run.bytes[KvmRunOffset.IMMEDIATE_EXIT] = 0;
        continue;
      }
      ctl[Ctl.EXITS] = (ctl[Ctl.EXITS]! + 1) | 0;
      const stop = handleExit(run, buses) ?? deviceStop;
      if (stop !== undefined) return { index: data.index, stop };
    }
  } catch (e) {
    return { index: data.index, stop: { kind: 'error', message: e instanceof Error ? e.message : String(e) } };
  } finally {
    native.munmap(runBuffer);
    setState(State.STOPPED);
  }
}

if (parentPort !== null) {
  parentPort.postMessage(main(workerData as VcpuThreadData));
}
