import { describe, expect, it } from 'vitest';
import { IoBus } from '../../../src/devices/io-bus.js';
import type { BusDevice } from '../../../src/devices/bus-device.js';
import { ExitReason, KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT, SystemEvent } from '../../../src/kvm/constants.js';
import { KvmRunOffset as R } from '../../../src/kvm/kvm-run.js';
import { handleExit, kvmRunView } from '../../../src/vcpu/exit-handler.js';

/** A made-up kvm_run page: tests write exits into it as KVM would. */
function fakeRun() {
  const run = kvmRunView(new ArrayBuffer(4096));
  return run;
}

function ioExit(run: ReturnType<typeof fakeRun>, dir: number, port: number, size: number, data: number[]) {
  const v = run.view;
  v.setUint32(R.EXIT_REASON, ExitReason.IO, true);
  v.setUint8(R.IO_DIRECTION, dir);
  v.setUint8(R.IO_SIZE, size);
  v.setUint16(R.IO_PORT, port, true);
  v.setUint32(R.IO_COUNT, data.length, true);
  v.setBigUint64(R.IO_DATA_OFFSET, 0x800n, true);
  data.forEach((d, i) => {
    if (size === 1) v.setUint8(0x800 + i, d);
    else if (size === 2) v.setUint16(0x800 + i * 2, d, true);
    else v.setUint32(0x800 + i * 4, d, true);
  });
}

class Port implements BusDevice {
  writes: number[] = [];
  constructor(private value: number) {}
  read(_o: number, _s: number): number { return this.value++; }
  write(_o: number, _s: number, v: number): void { this.writes.push(v); }
}

function buses() {
  const pio = new IoBus('pio');
  const mmio = new IoBus('mmio');
  const port = new Port(0x41);
  const reg = new Port(0x1234_5678);
  pio.register(0x3f8, 8, port, 'p');
  mmio.register(0xfea0_0200, 16, reg, 'r');
  return { pio, mmio, port, reg };
}

describe('handleExit', () => {
  it('delivers an OUT to the port bus', () => {
    const run = fakeRun();
    const b = buses();
    ioExit(run, KVM_EXIT_IO_OUT, 0x3f8, 1, [0x68]);
    expect(handleExit(run, b)).toBeUndefined();
    expect(b.port.writes).toEqual([0x68]);
  });

  it('delivers every item of a string OUT (rep outsb)', () => {
    const run = fakeRun();
    const b = buses();
    ioExit(run, KVM_EXIT_IO_OUT, 0x3f8, 2, [1, 2, 3]);
    handleExit(run, b);
    expect(b.port.writes).toEqual([1, 2, 3]);
  });

  it('completes an IN by writing the device value into the data area', () => {
    const run = fakeRun();
    const b = buses();
    ioExit(run, KVM_EXIT_IO_IN, 0x3f8, 1, [0, 0]);
    handleExit(run, b);
    expect([run.view.getUint8(0x800), run.view.getUint8(0x801)]).toEqual([0x41, 0x42]);
  });

  it('reads all-ones from an unmapped port', () => {
    const run = fakeRun();
    ioExit(run, KVM_EXIT_IO_IN, 0x80, 4, [0]);
    handleExit(run, buses());
    expect(run.view.getUint32(0x800, true)).toBe(0xffff_ffff);
  });

  it('handles MMIO reads and writes, splitting 8-byte accesses into halves', () => {
    const run = fakeRun();
    const b = buses();
    const v = run.view;
    v.setUint32(R.EXIT_REASON, ExitReason.MMIO, true);
    v.setBigUint64(R.MMIO_PHYS_ADDR, 0xfea0_0200n, true);
    v.setUint32(R.MMIO_LEN, 1, true);
    v.setUint8(R.MMIO_IS_WRITE, 1);
    v.setUint8(R.MMIO_DATA, 0x34);
    handleExit(run, b);
    expect(b.reg.writes).toEqual([0x34]);
    v.setUint8(R.MMIO_IS_WRITE, 0);
    v.setUint32(R.MMIO_LEN, 8, true);
    handleExit(run, b);
    expect(v.getUint32(R.MMIO_DATA, true)).toBe(0x1234_5678);
    expect(v.getUint32(R.MMIO_DATA + 4, true)).toBe(0x1234_5679);
  });

  it('turns terminal exits into stop reasons', () => {
    const run = fakeRun();
    const v = run.view;
    const b = buses();
    v.setUint32(R.EXIT_REASON, ExitReason.SHUTDOWN, true);
    expect(handleExit(run, b)).toEqual({ kind: 'shutdown' });
    v.setUint32(R.EXIT_REASON, ExitReason.SYSTEM_EVENT, true);
    v.setUint32(R.SYSTEM_EVENT_TYPE, SystemEvent.RESET, true);
    expect(handleExit(run, b)).toEqual({ kind: 'reset' });
    v.setUint32(R.SYSTEM_EVENT_TYPE, SystemEvent.SHUTDOWN, true);
    expect(handleExit(run, b)).toEqual({ kind: 'poweroff' });
    v.setUint32(R.EXIT_REASON, ExitReason.FAIL_ENTRY, true);
    v.setBigUint64(R.FAIL_ENTRY_REASON, 0x21n, true);
    expect(handleExit(run, b)).toEqual({ kind: 'error', message: expect.stringContaining('0x21') });
    v.setUint32(R.EXIT_REASON, ExitReason.INTERNAL_ERROR, true);
    v.setUint32(R.INTERNAL_SUBERROR, 3, true);
    expect(handleExit(run, b)).toEqual({ kind: 'error', message: 'KVM internal error (KVM_EXIT_INTERNAL_ERROR, suberror 3: an event could not be delivered)' });
    // An emulation failure with its instruction bytes (flags bit 0), as kvm_pvm reports the int3 of
    // guests/triple-fault.c: what QEMU prints as "extra data" 0x1, 0xfeebcc0f ...
    v.setUint32(R.INTERNAL_SUBERROR, 1, true);
    v.setUint32(R.INTERNAL_NDATA, 4, true);
    v.setBigUint64(R.EMULATION_FAILURE_FLAGS, 1n, true);
    v.setUint8(R.EMULATION_FAILURE_INSN_SIZE, 3);
    run.bytes.set([0xcc, 0xeb, 0xfe], R.EMULATION_FAILURE_INSN_BYTES);
    expect(handleExit(run, b)).toEqual({
      kind: 'error', message: 'KVM internal error (KVM_EXIT_INTERNAL_ERROR, suberror 1: emulation failure, instruction bytes cc eb fe)',
    });
    // Without the flag the bytes are not KVM's to trust.
    v.setBigUint64(R.EMULATION_FAILURE_FLAGS, 0n, true);
    expect(handleExit(run, b)).toEqual({ kind: 'error', message: 'KVM internal error (KVM_EXIT_INTERNAL_ERROR, suberror 1: emulation failure)' });
    v.setUint32(R.EXIT_REASON, 99, true);
    expect(handleExit(run, b)).toMatchObject({ kind: 'error', message: 'unhandled exit KVM_EXIT_99' });
  });

  it('keeps running after a kick (KVM_EXIT_INTR) or an interrupt window', () => {
    const run = fakeRun();
    run.view.setUint32(R.EXIT_REASON, ExitReason.INTR, true);
    expect(handleExit(run, buses())).toBeUndefined();
    run.view.setUint32(R.EXIT_REASON, ExitReason.IRQ_WINDOW_OPEN, true);
    expect(handleExit(run, buses())).toBeUndefined();
  });
});
