// captureVcpuState's MSR read, against a stand-in for KVM_GET_MSRS that behaves as the kernel's does
// (fills entries in order, stops at the first MSR it cannot read, returns how many it read). The
// real ioctls are covered by the migration e2e tests, where every MSR of this host's list reads.
import { describe, expect, it } from 'vitest';
import type { NativeAddon } from '../../../src/kvm/addon-types.js';
import { captureVcpuState, captureVcpuStateInto } from '../../../src/vcpu/vcpu-state.js';

const HEADER = 8;
const ENTRY = 16;

/** A NativeAddon whose vCPU getters do nothing, and whose KVM_GET_MSRS reads index * 3 for each index but those in `unreadable`. */
function fakeNative(unreadable: ReadonlySet<number>): { native: NativeAddon; calls: () => number } {
  let calls = 0;
  const nothing = () => {};
  const kvmGetMsrs = (_fd: number, buf: Uint8Array): number => {
    calls++;
    const v = new DataView(buf.buffer, buf.byteOffset);
    const n = v.getUint32(0, true);
    for (let i = 0; i < n; i++) {
      const index = v.getUint32(HEADER + i * ENTRY, true);
      if (unreadable.has(index)) return i;
      v.setBigUint64(HEADER + i * ENTRY + 8, BigInt(index) * 3n, true);
    }
    return n;
  };
  const native = {
    kvmGetMpState: nothing, kvmGetRegs: nothing, kvmGetSregs: nothing, kvmGetXsave: nothing, kvmGetXcrs: nothing,
    kvmGetLapic: nothing, kvmGetVcpuEvents: nothing, kvmGetDebugregs: nothing, kvmGetMsrs,
  } as unknown as NativeAddon;
  return { native, calls: () => calls };
}

function entries(msrs: Uint8Array): [number, bigint][] {
  const v = new DataView(msrs.buffer, msrs.byteOffset);
  return Array.from({ length: v.getUint32(0, true) }, (_, i) => [v.getUint32(HEADER + i * ENTRY, true), v.getBigUint64(HEADER + i * ENTRY + 8, true)]);
}

describe('captureVcpuState MSRs', () => {
  const indices = [0x10, 0x174, 0x175, 0xc0000080, 0xc0000100];

  it('reads every MSR of the list in one call when all of them read', () => {
    const { native, calls } = fakeNative(new Set());
    const s = captureVcpuState(native, 3, indices);
    expect(s.version).toBe(2);
    expect(entries(s.msrs)).toEqual(indices.map((i) => [i, BigInt(i) * 3n]));
    expect(calls()).toBe(1);
    // Again with the same list (its request is kept): a fresh buffer, not the one returned before.
    const again = captureVcpuState(native, 3, indices);
    expect(again.msrs).not.toBe(s.msrs);
    expect(entries(again.msrs)).toEqual(entries(s.msrs));
  });

  it('drops each MSR the vCPU cannot read and keeps the rest, in order', () => {
    const { native } = fakeNative(new Set([0x174, 0xc0000100]));
    const s = captureVcpuState(native, 3, indices);
    expect(entries(s.msrs)).toEqual([[0x10, 0x30n], [0x175, 0x175n * 3n], [0xc0000080, 0xc0000080n * 3n]]);
  });

  it('reads into given arrays in place, and says so when the vCPU cannot read every MSR', () => {
    const { native } = fakeNative(new Set());
    const into = captureVcpuState(native, 3, indices);
    const msrs = into.msrs;
    msrs.fill(0xff);
    expect(captureVcpuStateInto(native, 3, indices, into)).toBe(true);
    expect(into.msrs).toBe(msrs);
    expect(entries(msrs)).toEqual(indices.map((i) => [i, BigInt(i) * 3n]));
    expect(captureVcpuStateInto(fakeNative(new Set([0x175])).native, 3, indices, into)).toBe(false);
    // Arrays of another list's length: refused before KVM_GET_MSRS is asked.
    const { native: counting, calls } = fakeNative(new Set());
    expect(captureVcpuStateInto(counting, 3, indices.slice(1), into)).toBe(false);
    expect(calls()).toBe(0);
  });
});
