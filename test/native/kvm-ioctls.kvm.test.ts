// Every KVM wrapper against real KVM: the success path of each ioctl (state read back and written
// again), and the error paths that only a real VM can produce (a bad slot, a duplicate vCPU).
import { afterAll, beforeAll, expect, it } from 'vitest';
import { addon } from '../../src/kvm/addon.js';
import { Cap, KVM_MEM_LOG_DIRTY_PAGES } from '../../src/kvm/constants.js';
import { KvmError } from '../../src/kvm/kvm-error.js';
import { Kvm } from '../../src/kvm/kvm.js';
import * as S from '../../src/kvm/structs.js';
import { describeKvm } from '../helpers/kvm.js';

const native = addon();
const PAGE = 4096;

function kvmErrorOf(call: () => unknown): KvmError {
  try {
    call();
  } catch (e) {
    if (e instanceof KvmError) return e;
    throw e;
  }
  throw new Error('expected a KvmError');
}

describeKvm('KVM ioctls on real KVM', () => {
  let kvm: Kvm;
  let vmFd: number;
  let vcpuFd: number;
  let ram: ArrayBuffer;

  beforeAll(() => {
    kvm = Kvm.open();
    vmFd = native.kvmCreateVm(kvm.fd, 0);
    native.kvmSetTssAddr(vmFd, 0xfffbd000);
    native.kvmSetIdentityMapAddr(vmFd, 0xfffbc000n);
    native.kvmCreateIrqchip(vmFd);
    native.kvmCreatePit2(vmFd, 1);
    ram = native.mmapAnonymous(16 * PAGE);
    native.kvmSetUserMemoryRegion(vmFd, 0, KVM_MEM_LOG_DIRTY_PAGES, 0n, BigInt(16 * PAGE), native.bufferAddress(ram));
    vcpuFd = native.kvmCreateVcpu(vmFd, 0);
  });

  afterAll(() => {
    native.close(vcpuFd);
    native.close(vmFd);
    native.munmap(ram);
    kvm.close();
  });

  it('answers system queries', () => {
    expect(native.kvmGetApiVersion(kvm.fd)).toBe(12);
    expect(native.kvmCheckExtension(kvm.fd, Cap.USER_MEMORY)).toBeGreaterThan(0);
    expect(native.kvmGetVcpuMmapSize(kvm.fd)).toBeGreaterThanOrEqual(PAGE);
    const cpuid = kvm.supportedCpuid();
    expect(cpuid.some((e) => e.function === 0)).toBe(true);
    const msrList = new Uint8Array(4 + 4 * 1024);
    new DataView(msrList.buffer).setUint32(0, 1024, true);
    expect(native.kvmGetMsrIndexList(kvm.fd, msrList)).toBeGreaterThan(0);
  });

  it('refuses a bad memory slot with EINVAL, naming KVM_SET_USER_MEMORY_REGION', () => {
    const e = kvmErrorOf(() => native.kvmSetUserMemoryRegion(vmFd, 0x7fff, 0, 0x100000n, BigInt(PAGE), native.bufferAddress(ram)));
    expect(e).toMatchObject({ errno: 22, code: 'EINVAL', syscall: 'KVM_SET_USER_MEMORY_REGION' });
    expect(e.message).toBe('KVM_SET_USER_MEMORY_REGION failed: EINVAL (22)');
    // Misaligned guest address.
    expect(kvmErrorOf(() => native.kvmSetUserMemoryRegion(vmFd, 1, 0, 0x100001n, BigInt(PAGE), native.bufferAddress(ram))).code).toBe('EINVAL');
  });

  it('refuses a second vCPU with the same id (EEXIST)', () => {
    expect(kvmErrorOf(() => native.kvmCreateVcpu(vmFd, 0))).toMatchObject({ code: 'EEXIST', syscall: 'KVM_CREATE_VCPU' });
  });

  it('reads the dirty log of a logging slot, and refuses it for a slot that does not exist (ENOENT)', () => {
    const bitmap = new Uint8Array(8).fill(0xff);
    // It returns whether KVM left any bit set: here none, as no vCPU has written; the 1s are overwritten.
    expect(native.kvmGetDirtyLog(vmFd, 0, bitmap)).toBe(false);
    expect(bitmap.every((b) => b === 0)).toBe(true);
    expect(kvmErrorOf(() => native.kvmGetDirtyLog(vmFd, 5, bitmap))).toMatchObject({ code: 'ENOENT', syscall: 'KVM_GET_DIRTY_LOG' });
  });

  it('round-trips every piece of vCPU state', () => {
    const pieces: [string, number, (fd: number, b: Uint8Array) => void, (fd: number, b: Uint8Array) => void][] = [
      ['regs', S.KVM_REGS_SIZE, native.kvmGetRegs, native.kvmSetRegs],
      ['sregs', S.KVM_SREGS_SIZE, native.kvmGetSregs, native.kvmSetSregs],
      ['fpu', S.KVM_FPU_SIZE, native.kvmGetFpu, native.kvmSetFpu],
      ['lapic', S.KVM_LAPIC_SIZE, native.kvmGetLapic, native.kvmSetLapic],
      ['xsave', S.KVM_XSAVE_SIZE, native.kvmGetXsave, native.kvmSetXsave],
      ['xcrs', S.KVM_XCRS_SIZE, native.kvmGetXcrs, native.kvmSetXcrs],
      ['vcpu events', S.KVM_VCPU_EVENTS_SIZE, native.kvmGetVcpuEvents, native.kvmSetVcpuEvents],
      ['mp state', S.KVM_MP_STATE_SIZE, native.kvmGetMpState, native.kvmSetMpState],
      ['debugregs', S.KVM_DEBUGREGS_SIZE, native.kvmGetDebugregs, native.kvmSetDebugregs],
    ];
    for (const [, size, get, set] of pieces) {
      const a = new Uint8Array(size);
      get(vcpuFd, a);
      set(vcpuFd, a);
      const b = new Uint8Array(size);
      get(vcpuFd, b);
      expect(b).toEqual(a);
    }
    const regs = new Uint8Array(S.KVM_REGS_SIZE);
    native.kvmGetRegs(vcpuFd, regs);
    const decoded = S.decodeRegs(regs);
    native.kvmSetRegs(vcpuFd, S.encodeRegs({ ...decoded, rax: 0x1234n }));
    native.kvmGetRegs(vcpuFd, regs);
    expect(S.decodeRegs(regs).rax).toBe(0x1234n);
  });

  it('sets CPUID and reads and writes MSRs', () => {
    native.kvmSetCpuid2(vcpuFd, S.encodeCpuid2(kvm.supportedCpuid()));
    const msrs = new Uint8Array(8 + 16);
    const v = new DataView(msrs.buffer);
    v.setUint32(0, 1, true);
    v.setUint32(8, 0x174, true); // IA32_SYSENTER_CS
    v.setBigUint64(16, 0x10n, true);
    expect(native.kvmSetMsrs(vcpuFd, msrs)).toBe(1);
    v.setBigUint64(16, 0n, true);
    expect(native.kvmGetMsrs(vcpuFd, msrs)).toBe(1);
    expect(v.getBigUint64(16, true)).toBe(0x10n);
  });

  it('round-trips VM-wide state: clock, PIC/IOAPIC, PIT', () => {
    const clock = new Uint8Array(S.KVM_CLOCK_DATA_SIZE);
    native.kvmGetClock(vmFd, clock);
    native.kvmSetClock(vmFd, clock);
    for (const chip of [0, 1, 2]) {
      const buf = new Uint8Array(S.KVM_IRQCHIP_SIZE);
      new DataView(buf.buffer).setUint32(0, chip, true);
      native.kvmGetIrqchip(vmFd, buf);
      native.kvmSetIrqchip(vmFd, buf);
    }
    const pit = new Uint8Array(S.KVM_PIT_STATE2_SIZE);
    native.kvmGetPit2(vmFd, pit);
    native.kvmSetPit2(vmFd, pit);
    native.kvmIrqLine(vmFd, 4, 1);
    native.kvmIrqLine(vmFd, 4, 0);
  });

  it('wires eventfds as irqfd and ioeventfd', () => {
    const irq = native.eventfd(0, 0);
    const io = native.eventfd(0, 0);
    native.kvmIrqfd(vmFd, irq, 5, 0, 0);
    native.kvmIoeventfd(vmFd, 0xfeb00050n, 4, io, 0, 0n);
    native.close(irq);
    native.close(io);
  });

  it('enables manual dirty-log protection and clears a dirty log', () => {
    const cap = native.kvmCheckExtension(vmFd, Cap.MANUAL_DIRTY_LOG_PROTECT2);
    if (cap === 0) return; // the kernel lacks it; KVM_GET_DIRTY_LOG alone is then the protocol
    const vm2 = native.kvmCreateVm(kvm.fd, 0);
    const mem = native.mmapAnonymous(16 * PAGE);
    try {
      native.kvmEnableCap(vm2, Cap.MANUAL_DIRTY_LOG_PROTECT2, 0, new BigUint64Array([1n, 0n, 0n, 0n]));
      native.kvmSetUserMemoryRegion(vm2, 0, KVM_MEM_LOG_DIRTY_PAGES, 0n, BigInt(16 * PAGE), native.bufferAddress(mem));
      const bitmap = new Uint8Array(8);
      native.kvmGetDirtyLog(vm2, 0, bitmap);
      native.kvmClearDirtyLog(vm2, 0, 0, 16, new Uint8Array(8).fill(0xff));
    } finally {
      native.close(vm2);
      native.munmap(mem);
    }
  });
});
