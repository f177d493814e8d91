import type { NativeAddon } from '../kvm/addon-types.js';
import { KvmRunOffset, kvmRun } from '../kvm/kvm-run.js';
import { KVM_REGS_SIZE, decodeRegs } from '../kvm/structs.js';
import { Ctl, Request, State, THROTTLE_SLICE_MS } from './control-block.js';
import { tracePhase } from '../machine/phase-trace.js';
import { handleExit, type ExitBuses, type KvmRunView, type VcpuStop } from './exit-handler.js';

/** How long a parked thread asked to stand by (Ctl.STAND_BY) waits awake for its next request. */
const PARKED_SPIN_MS = 5;

/**
 * The vCPU run loop: KVM_RUN, dispatch the exit, repeat, honouring the main thread's requests in the
 * control block between entries. Returns why it stopped (undefined: stopped on request). The vCPU
 * thread runs exactly this; bench/exit-latency runs it too, against the C loop in the addon.
 *
 * Pausing: the main thread sets REQUEST = PAUSE, sets immediate_exit and signals the thread; KVM_RUN
 * returns EINTR, and the loop parks in Atomics.wait on WAKE with STATE = PAUSED until REQUEST changes.
 *
 * INVARIANT: the loop parks only after a KVM_RUN that returned EINTR, never straight after an exit it
 * handled. An IN or OUT (or MMIO) exit is complete only once KVM_RUN is entered again: KVM then moves
 * RIP past the instruction and, for an IN, loads the data into RAX (Documentation/virt/kvm/api.rst,
 * KVM_RUN: "the corresponding operations are complete (and guest state is consistent) only after
 * userspace has re-entered the kernel with KVM_RUN"; immediate_exit makes that entry return at once).
 * State saved before then has RIP on the instruction, and a migrated guest would execute it twice,
 * as QEMU's loop avoids by always re-entering before it stops.
 */
export function runLoop(
  native: NativeAddon,
  vcpuFd: number,
  run: KvmRunView,
  buses: ExitBuses,
  ctl: Int32Array,
  /** A stop a device asked for during the last exit (debug-exit, power-off), if any. */
  deviceStop: () => VcpuStop | undefined,
  /** Runs, parked, right after each pause epoch is acknowledged (the vCPU thread's capture on request). */
  parked?: (epoch: number) => void,
): VcpuStop | undefined {
  const setState = (s: number) => { Atomics.store(ctl, Ctl.STATE, s); Atomics.notify(ctl, Ctl.STATE); };
  /** The last KVM_RUN returned an exit, whose I/O KVM completes at the next entry. */
  let exitPending = false;
  for (;;) {
    const request = Atomics.load(ctl, Ctl.REQUEST);
    if (request === Request.STOP) return undefined;
    if (request === Request.PAUSE && exitPending) {
      // Complete the exit first: this entry finishes the instruction and returns EINTR at once.
      run.bytes[KvmRunOffset.IMMEDIATE_EXIT] = 1;
    } else if (request === Request.PAUSE) {
      run.bytes[KvmRunOffset.IMMEDIATE_EXIT] = 0;
      setState(State.PAUSED);
      for (;;) {
        // WAKE is read before looking: a change made after this read bumps it, so the wait below
        // returns at once instead of sleeping through that change.
        const wake = Atomics.load(ctl, Ctl.WAKE);
        if (Atomics.load(ctl, Ctl.REQUEST) !== Request.PAUSE) break;
        // Acknowledge every pause request seen while parked, including one that followed a resume
        // this thread never woke up for.
        const epoch = Atomics.load(ctl, Ctl.PAUSE_EPOCH);
        if (Atomics.load(ctl, Ctl.PAUSED_EPOCH) !== epoch) {
          Atomics.store(ctl, Ctl.PAUSED_EPOCH, epoch);
          Atomics.notify(ctl, Ctl.PAUSED_EPOCH);
          parked?.(epoch);
        }
        if (Atomics.load(ctl, Ctl.STAND_BY) === 1) {
          const until = performance.now() + PARKED_SPIN_MS;
          while (Atomics.load(ctl, Ctl.WAKE) === wake && performance.now() < until) native.schedYield();
          if (Atomics.load(ctl, Ctl.WAKE) !== wake) continue;
          Atomics.store(ctl, Ctl.STAND_BY, 0);
        }
        Atomics.wait(ctl, Ctl.WAKE, wake);
      }
      setState(State.RUNNING);
      if (Atomics.load(ctl, Ctl.REQUEST) === Request.RUN) tracePhase('vcpu: unparked');
      continue;
    }
    exitPending = false;
    if (kvmRun(native, vcpuFd) !== 0) {
      // EINTR (a kick) or EAGAIN (an AP just started). If a kick's request was withdrawn meanwhile, the
      // immediate_exit it left must not keep failing every entry.
      if (Atomics.load(ctl, Ctl.REQUEST) === Request.RUN) {
        run.bytes[KvmRunOffset.IMMEDIATE_EXIT] = 0;
        // Throttled (auto-converge): the kick was the throttle's; sleep out this vCPU's share here.
        // Waiting on WAKE, so a pause or stop posted meanwhile ends the sleep at once.
        const percent = Atomics.load(ctl, Ctl.THROTTLE);
        if (percent > 0) {
          const wake = Atomics.load(ctl, Ctl.WAKE);
          if (Atomics.load(ctl, Ctl.REQUEST) === Request.RUN) {
            Atomics.wait(ctl, Ctl.WAKE, wake, (THROTTLE_SLICE_MS * percent) / (100 - percent));
            ctl[Ctl.THROTTLE_SLEEPS] = (ctl[Ctl.THROTTLE_SLEEPS]! + 1) | 0;
          }
        }
      }
      continue;
    }
    exitPending = true;
    ctl[Ctl.EXITS] = (ctl[Ctl.EXITS]! + 1) | 0;
    const exitStop = handleExit(run, buses);
    if (exitStop?.kind === 'error') return { kind: 'error', message: `${exitStop.message} at guest RIP ${guestRip(native, vcpuFd)}` };
    const stop = exitStop ?? deviceStop();
    if (stop !== undefined) return stop;
  }
}

/** Where the guest was when KVM gave up on it, for the error that ends the VM; off the hot path. */
function guestRip(native: NativeAddon, vcpuFd: number): string {
  const regs = new Uint8Array(KVM_REGS_SIZE);
  try {
    native.kvmGetRegs(vcpuFd, regs);
  } catch (e) {
    return `unknown (${e instanceof Error ? e.message : String(e)})`;
  }
  return `0x${decodeRegs(regs).rip.toString(16)}`;
}
