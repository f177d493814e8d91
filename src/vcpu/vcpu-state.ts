import type { NativeAddon } from '../kvm/addon-types.js';
import { KvmError } from '../kvm/kvm-error.js';
import {
  KVM_DEBUGREGS_SIZE, KVM_LAPIC_SIZE, KVM_MP_STATE_SIZE, KVM_REGS_SIZE, KVM_SREGS_SIZE,
  KVM_VCPU_EVENTS_SIZE, KVM_XCRS_SIZE, KVM_XSAVE_SIZE,
} from '../kvm/structs.js';

/**
 * The complete architectural state of one vCPU as KVM exposes it, as named raw structs (the kernel's
 * own layouts: the destination's KVM reads them back byte for byte). Captured and restored only while
 * the vCPU is outside KVM_RUN (paused).
 *
 * Version 2 has no `fpu` (KVM_GET_FPU): XSAVE carries the x87 and SSE state, and version 1's copy was
 * never restored, only read in the guest's downtime (an ioctl, ~6-25 us on kvm_pvm).
 */
export interface VcpuState {
  readonly version: 2;
  readonly regs: Uint8Array;
  readonly sregs: Uint8Array;
  readonly xsave: Uint8Array;
  readonly xcrs: Uint8Array;
  readonly lapic: Uint8Array;
  readonly events: Uint8Array;
  readonly mpState: Uint8Array;
  readonly debugregs: Uint8Array;
  /** struct kvm_msrs with every MSR KVM would read (from KVM_GET_MSR_INDEX_LIST). */
  readonly msrs: Uint8Array;
}

const MSRS_HEADER = 8;
const MSR_ENTRY = 16;

/**
 * MSRs in KVM's list that are not state but commands: writing MSR_KVM_WALL_CLOCK(_NEW) makes KVM write
 * this host's wall clock into guest memory at the address written (0 if the guest never set it), so
 * restoring them would change guest RAM on the destination after it was copied, and the RAM would no
 * longer equal the source's (the verify switch caught this). A guest that wants the wall clock asks
 * again.
 */
export const MSRS_NOT_MIGRATED: ReadonlySet<number> = new Set([
  0x11, // MSR_KVM_WALL_CLOCK
  0x4b56_4d00, // MSR_KVM_WALL_CLOCK_NEW
]);

/** KVM_GET_MSR_INDEX_LIST, less MSRS_NOT_MIGRATED: the MSRs saved and restored for a guest. */
export function msrIndexList(native: NativeAddon, kvmFd: number): number[] {
  for (let capacity = 256; ; capacity *= 2) {
    const buf = new Uint8Array(4 + capacity * 4);
    new DataView(buf.buffer).setUint32(0, capacity, true);
    try {
      const n = native.kvmGetMsrIndexList(kvmFd, buf);
      return Array.from(new Uint32Array(buf.buffer, 4, n)).filter((index) => !MSRS_NOT_MIGRATED.has(index));
    } catch (e) {
      if (!(e instanceof KvmError && e.code === 'E2BIG') || capacity > 8192) throw e;
    }
  }
}

/** msrsBuffer(indices) for each index list captured (a VM keeps one list for its life). */
const msrsTemplates = new WeakMap<readonly number[], Uint8Array>();

function msrsBuffer(indices: readonly number[]): Uint8Array {
  const buf = new Uint8Array(MSRS_HEADER + indices.length * MSR_ENTRY);
  const v = new DataView(buf.buffer);
  v.setUint32(0, indices.length, true);
  indices.forEach((index, i) => v.setUint32(MSRS_HEADER + i * MSR_ENTRY, index, true));
  return buf;
}

/**
 * Reads the MSRs in `indices` that this vCPU can read, when one of them cannot be (captureVcpuStateInto
 * reads them all in one call, the usual case). KVM_GET_MSRS stops at the first MSR it cannot read and
 * returns how many it did; that one is dropped and the read goes on from the next.
 */
function readMsrs(native: NativeAddon, vcpuFd: number, indices: readonly number[]): Uint8Array {
  const read: { index: number; value: bigint }[] = [];
  let rest = [...indices];
  while (rest.length > 0) {
    const buf = msrsBuffer(rest);
    const n = native.kvmGetMsrs(vcpuFd, buf);
    const v = new DataView(buf.buffer);
    for (let i = 0; i < n; i++) {
      read.push({ index: v.getUint32(MSRS_HEADER + i * MSR_ENTRY, true), value: v.getBigUint64(MSRS_HEADER + i * MSR_ENTRY + 8, true) });
    }
    rest = rest.slice(n + 1); // skip the unreadable one
  }
  const buf = msrsBuffer(read.map((m) => m.index));
  const v = new DataView(buf.buffer);
  read.forEach((m, i) => v.setBigUint64(MSRS_HEADER + i * MSR_ENTRY + 8, m.value, true));
  return buf;
}

export function captureVcpuState(native: NativeAddon, vcpuFd: number, msrIndices: readonly number[]): VcpuState {
  const into = vcpuStateViews(new ArrayBuffer(vcpuStateBytes(msrIndices.length)), msrIndices.length);
  if (captureVcpuStateInto(native, vcpuFd, msrIndices, into)) return into;
  return { ...into, msrs: readMsrs(native, vcpuFd, msrIndices) };
}

/**
 * captureVcpuState into the arrays of `into` (of the sizes captureVcpuState gives), in place: a
 * migration's switch-over reads straight into its STATE record (stateRecordTemplate). False if the
 * vCPU could not read every MSR of `msrIndices`, which then needs captureVcpuState's shorter list;
 * every other array is read all the same.
 */
export function captureVcpuStateInto(native: NativeAddon, vcpuFd: number, msrIndices: readonly number[], into: VcpuState): boolean {
  // MP state first: KVM completes a pending INIT/SIPI when it is read, which changes the registers.
  native.kvmGetMpState(vcpuFd, into.mpState);
  native.kvmGetRegs(vcpuFd, into.regs);
  native.kvmGetSregs(vcpuFd, into.sregs);
  native.kvmGetXsave(vcpuFd, into.xsave);
  native.kvmGetXcrs(vcpuFd, into.xcrs);
  native.kvmGetLapic(vcpuFd, into.lapic);
  native.kvmGetVcpuEvents(vcpuFd, into.events);
  native.kvmGetDebugregs(vcpuFd, into.debugregs);
  let template = msrsTemplates.get(msrIndices);
  if (template === undefined) msrsTemplates.set(msrIndices, (template = msrsBuffer(msrIndices)));
  if (into.msrs.length !== template.length) return false;
  into.msrs.set(template);
  return native.kvmGetMsrs(vcpuFd, into.msrs) === msrIndices.length;
}

/** The byte sizes of a VcpuState's arrays, in the order captureVcpuState fills them. */
function vcpuStateSizes(msrCount: number): [keyof Omit<VcpuState, 'version'>, number][] {
  return [
    ['mpState', KVM_MP_STATE_SIZE], ['regs', KVM_REGS_SIZE], ['sregs', KVM_SREGS_SIZE], ['xsave', KVM_XSAVE_SIZE],
    ['xcrs', KVM_XCRS_SIZE], ['lapic', KVM_LAPIC_SIZE], ['events', KVM_VCPU_EVENTS_SIZE], ['debugregs', KVM_DEBUGREGS_SIZE],
    ['msrs', MSRS_HEADER + msrCount * MSR_ENTRY],
  ];
}

/** Bytes of a buffer that vcpuStateViews lays a state with `msrCount` MSRs over. */
export function vcpuStateBytes(msrCount: number): number {
  return vcpuStateSizes(msrCount).reduce((n, [, size]) => n + size, 0);
}

/**
 * A VcpuState whose arrays are views, end to end, of `buffer` (vcpuStateBytes(msrCount) long): two
 * threads sharing the buffer see one state (a vCPU thread's capture area, VcpuThreads).
 */
export function vcpuStateViews(buffer: ArrayBufferLike, msrCount: number): VcpuState {
  const state: Record<string, unknown> = { version: 2 };
  let at = 0;
  for (const [name, size] of vcpuStateSizes(msrCount)) {
    state[name] = new Uint8Array(buffer, at, size);
    at += size;
  }
  return state as unknown as VcpuState;
}

/** A copy of `s` whose arrays are its own. */
export function copyVcpuState(s: VcpuState): VcpuState {
  const msrCount = (s.msrs.length - MSRS_HEADER) / MSR_ENTRY;
  const copy = vcpuStateViews(new ArrayBuffer(vcpuStateBytes(msrCount)), msrCount);
  copyVcpuStateInto(s, copy);
  return copy;
}

/** Copies the arrays of `from` into those of `into`, if every one is the same length; false (and nothing copied) if not. */
export function copyVcpuStateInto(from: VcpuState, into: VcpuState): boolean {
  const names = vcpuStateSizes(0).map(([name]) => name);
  if (!names.every((name) => from[name].length === into[name].length)) return false;
  for (const name of names) into[name].set(from[name]);
  return true;
}

/**
 * Restores a captured state, in the order Firecracker uses for a snapshot restore: MP state, registers
 * and special registers before the LAPIC (whose base the sregs carry), MSRs before events (pending
 * exceptions and NMIs last, so nothing set afterwards can clear them).
 */
export function restoreVcpuState(native: NativeAddon, vcpuFd: number, s: VcpuState): void {
  if (s.version !== 2) throw new Error(`vCPU state version ${s.version} is not supported (this tsvmm reads version 2)`);
  native.kvmSetMpState(vcpuFd, s.mpState);
  native.kvmSetRegs(vcpuFd, s.regs);
  native.kvmSetSregs(vcpuFd, s.sregs);
  native.kvmSetXsave(vcpuFd, s.xsave);
  native.kvmSetXcrs(vcpuFd, s.xcrs);
  native.kvmSetDebugregs(vcpuFd, s.debugregs);
  native.kvmSetLapic(vcpuFd, s.lapic);
  const count = new DataView(s.msrs.buffer, s.msrs.byteOffset).getUint32(0, true);
  const written = native.kvmSetMsrs(vcpuFd, s.msrs);
  if (written !== count) throw new Error(`KVM_SET_MSRS wrote ${written} of ${count} MSRs: the destination's KVM refuses MSR #${written}`);
  native.kvmSetVcpuEvents(vcpuFd, s.events);
}
