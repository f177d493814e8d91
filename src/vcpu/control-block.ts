/**
 * The words a vCPU thread and the main thread share to agree on running, pausing and stopping
 * (an Int32Array over a SharedArrayBuffer, one per vCPU). The main thread writes REQUEST; the vCPU
 * thread writes STATE and notifies on it.
 */
export const Ctl = {
  REQUEST: 0,
  STATE: 1,
  /** Linux thread id of the vCPU thread, for tgkill. 0 until it has started. */
  TID: 2,
  /** Exits handled (wrapping), for statistics. */
  EXITS: 3,
  /** Pause requests so far (main thread increments with each). */
  PAUSE_EPOCH: 4,
  /**
   * The PAUSE_EPOCH the vCPU thread last acknowledged while parked. A pause has taken effect when this
   * equals PAUSE_EPOCH: STATE alone could still say PAUSED from the previous pause while the thread
   * is about to run again.
   */
  PAUSED_EPOCH: 5,
  /**
   * Bumped (and notified) by the main thread after every change of REQUEST or PAUSE_EPOCH; a parked
   * thread waits on this word, not on REQUEST. Waiting on REQUEST lost wake-ups: a resume and the
   * next pause could both land between the thread's last look and its wait, leaving REQUEST at PAUSE
   * as it was, so the wait slept through a pause epoch it never acknowledged (a hung pause).
   */
  WAKE: 6,
  /**
   * Auto-converge: the percentage of time this vCPU is to spend asleep (0 = none). The main thread
   * kicks the vCPU every THROTTLE_SLICE_MS / (1 - p) ms; after each kick the vCPU thread itself sleeps
   * THROTTLE_SLICE_MS * p / (1 - p) ms, as QEMU's cpu_throttle_thread does, with no round trip to the
   * main thread and the devices left running.
   */
  THROTTLE: 7,
  /** Throttle sleeps taken (wrapping), for statistics. */
  THROTTLE_SLEEPS: 8,
  /**
   * The pause epoch for which the main thread wants the vCPU thread to read its vCPU's state into
   * its capture area (VcpuThreads.pause with captureState) once parked, the thread being awake then
   * and the main thread busy with the rest of the stop.
   */
  CAPTURE_EPOCH: 9,
  /** The epoch whose capture the vCPU thread has finished (written after CAPTURE_OK, then notified). */
  CAPTURED_EPOCH: 10,
  /** 1 if that capture read everything (captureVcpuStateInto), 0 if the main thread must read the vCPU itself. */
  CAPTURE_OK: 11,
  /**
   * 1: a parked thread waits for its next request awake (polling, yielding its CPU each turn) rather
   * than asleep, for up to PARKED_SPIN_MS; the thread clears it when it gives up (VcpuThreads.standBy).
   */
  STAND_BY: 12,
  WORDS: 13,
} as const;

/** The guest's run time between two throttle sleeps (QEMU's CPU_THROTTLE_TIMESLICE_NS, 10 ms). */
export const THROTTLE_SLICE_MS = 10;

export const Request = { RUN: 0, PAUSE: 1, STOP: 2 } as const;
export const State = { STARTING: 0, RUNNING: 1, PAUSED: 2, STOPPED: 3 } as const;

/** Sets REQUEST and wakes a parked thread (see Ctl.WAKE). */
export function postRequest(ctl: Int32Array, request: number): void {
  Atomics.store(ctl, Ctl.REQUEST, request);
  wakeParked(ctl);
}

/** Bumps and notifies WAKE after a change a parked thread must see (see Ctl.WAKE). */
export function wakeParked(ctl: Int32Array): void {
  Atomics.add(ctl, Ctl.WAKE, 1);
  Atomics.notify(ctl, Ctl.WAKE);
}

export function createControlBlock(): Int32Array {
  return new Int32Array(new SharedArrayBuffer(Ctl.WORDS * 4));
}
