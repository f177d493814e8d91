import { ExitReason, KVM_EXIT_IO_OUT, SystemEvent, exitReasonName } from '../kvm/constants.js';
import { KvmRunOffset as R } from '../kvm/kvm-run.js';
import type { IoBus } from '../devices/io-bus.js';

/** Why a vCPU stopped running the guest for good. */
export type VcpuStop =
  | { kind: 'guest-exit'; status: number } // debug-exit
  | { kind: 'poweroff' }
  | { kind: 'reset' }
  | { kind: 'shutdown' } // triple fault: KVM_EXIT_SHUTDOWN
  | { kind: 'error'; message: string };

/** The buses an exit can be dispatched to. */
export interface ExitBuses {
  readonly pio: IoBus;
  readonly mmio: IoBus;
}

/**
 * One vCPU's struct kvm_run as the exit handler sees it: a DataView and a byte view over the same
 * memory (the mmapped page in a vCPU thread, or a plain buffer in tests).
 */
export interface KvmRunView {
  readonly view: DataView;
  readonly bytes: Uint8Array;
}

export function kvmRunView(buffer: ArrayBuffer): KvmRunView {
  return { view: new DataView(buffer), bytes: new Uint8Array(buffer) };
}

/**
 * Handles the exit described in `run` (after KVM_RUN returned 0): port and MMIO accesses go to the
 * buses, whose devices may complete an IN/read by writing its data back into `run`. Returns undefined
 * to keep running, or why the vCPU must stop. Pure apart from the devices it calls, so tests drive it
 * with made-up exits.
 */
export function handleExit(run: KvmRunView, buses: ExitBuses): VcpuStop | undefined {
  const v = run.view;
  const reason = v.getUint32(R.EXIT_REASON, true);
  switch (reason) {
    case ExitReason.IO:
      handleIo(run, buses.pio);
      return undefined;
    case ExitReason.MMIO:
      handleMmio(run, buses.mmio);
      return undefined;
    case ExitReason.INTR:
    case ExitReason.IRQ_WINDOW_OPEN:
    case ExitReason.HLT: // only without an in-kernel LAPIC; the next KVM_RUN resumes
      return undefined;
    case ExitReason.SHUTDOWN:
      return { kind: 'shutdown' };
    case ExitReason.SYSTEM_EVENT: {
      const type = v.getUint32(R.SYSTEM_EVENT_TYPE, true);
      if (type === SystemEvent.SHUTDOWN) return { kind: 'poweroff' };
      if (type === SystemEvent.RESET) return { kind: 'reset' };
      return { kind: 'error', message: `guest crashed (KVM_EXIT_SYSTEM_EVENT type ${type})` };
    }
    case ExitReason.FAIL_ENTRY:
      return {
        kind: 'error',
        message: `KVM could not enter the guest (KVM_EXIT_FAIL_ENTRY, hardware reason 0x${v.getBigUint64(R.FAIL_ENTRY_REASON, true).toString(16)})`,
      };
    case ExitReason.INTERNAL_ERROR:
      return { kind: 'error', message: `KVM internal error (${describeInternalError(v)})` };
    default:
      return { kind: 'error', message: `unhandled exit ${exitReasonName(reason)}` };
  }
}

/** include/uapi/linux/kvm.h, KVM_INTERNAL_ERROR_*. */
const INTERNAL_SUBERRORS: Readonly<Record<number, string>> = {
  1: 'emulation failure',
  2: 'simultaneous exceptions',
  3: 'an event could not be delivered',
  4: 'unexpected exit reason',
};
const INTERNAL_ERROR_EMULATION = 1;
const EMULATION_FLAG_INSTRUCTION_BYTES = 1;

/**
 * KVM_EXIT_INTERNAL_ERROR's suberror by name and, for an emulation failure whose instruction bytes KVM
 * reported (flag 1), those bytes: on a host that emulates guest CPL0 code (kvm_pvm), this is how a
 * guest instruction the host cannot emulate, or a triple fault it cannot deliver, reaches us.
 */
function describeInternalError(v: DataView): string {
  const suberror = v.getUint32(R.INTERNAL_SUBERROR, true);
  let text = `KVM_EXIT_INTERNAL_ERROR, suberror ${suberror}`;
  const name = INTERNAL_SUBERRORS[suberror];
  if (name !== undefined) text += `: ${name}`;
  if (suberror === INTERNAL_ERROR_EMULATION && v.getUint32(R.INTERNAL_NDATA, true) >= 3
    && (v.getUint32(R.EMULATION_FAILURE_FLAGS, true) & EMULATION_FLAG_INSTRUCTION_BYTES) !== 0) {
    const size = Math.min(v.getUint8(R.EMULATION_FAILURE_INSN_SIZE), 15);
    const bytes = Array.from({ length: size }, (_, i) => v.getUint8(R.EMULATION_FAILURE_INSN_BYTES + i).toString(16).padStart(2, '0'));
    if (size > 0) text += `, instruction bytes ${bytes.join(' ')}`;
  }
  return text;
}

function handleIo(run: KvmRunView, pio: IoBus): void {
  const v = run.view;
  const size = v.getUint8(R.IO_SIZE);
  const port = v.getUint16(R.IO_PORT, true);
  const count = v.getUint32(R.IO_COUNT, true);
  // The data area lies inside the kvm_run mapping (so its offset fits in the low 32 bits, read without
  // a BigInt allocation); a string instruction (rep ins/outs) leaves `count` items there back to back.
  let at = v.getUint32(R.IO_DATA_OFFSET, true);
  if (v.getUint8(R.IO_DIRECTION) === KVM_EXIT_IO_OUT) {
    for (let i = 0; i < count; i++, at += size) pio.write(port, size, readLe(v, at, size));
  } else {
    for (let i = 0; i < count; i++, at += size) writeLe(v, at, size, pio.read(port, size));
  }
}

function handleMmio(run: KvmRunView, mmio: IoBus): void {
  const v = run.view;
  // Two 32-bit halves: no BigInt allocated on the exit path.
  const address = v.getUint32(R.MMIO_PHYS_ADDR, true) + v.getUint32(R.MMIO_PHYS_ADDR + 4, true) * 0x1_0000_0000;
  const len = v.getUint32(R.MMIO_LEN, true);
  const isWrite = v.getUint8(R.MMIO_IS_WRITE) !== 0;
  // Devices take 1, 2 or 4 bytes; an 8-byte access is two 4-byte halves, low first.
  for (let done = 0; done < len; done += 4) {
    const size = Math.min(4, len - done);
    if (isWrite) mmio.write(address + done, size, readLe(v, R.MMIO_DATA + done, size));
    else writeLe(v, R.MMIO_DATA + done, size, mmio.read(address + done, size));
  }
}

function readLe(v: DataView, at: number, size: number): number {
  if (size === 1) return v.getUint8(at);
  if (size === 2) return v.getUint16(at, true);
  if (size === 4) return v.getUint32(at, true);
  // 3-byte accesses do not exist on x86 buses; read what is there byte by byte.
  let value = 0;
  for (let i = 0; i < size; i++) value |= v.getUint8(at + i) << (8 * i);
  return value >>> 0;
}

function writeLe(v: DataView, at: number, size: number, value: number): void {
  if (size === 1) v.setUint8(at, value & 0xff);
  else if (size === 2) v.setUint16(at, value & 0xffff, true);
  else if (size === 4) v.setUint32(at, value >>> 0, true);
  else for (let i = 0; i < size; i++) v.setUint8(at + i, (value >>> (8 * i)) & 0xff);
}
