import { describe, expect, it } from 'vitest';
import { Interrupt, MmioReg as R, Status } from '../../../../src/devices/virtio/constants.js';
import { RECORD_HEADER_BYTES } from '../../../../src/migration/protocol.js';
import { parseState, stateRecord } from '../../../../src/migration/state-record.js';
import { VirtioMmioTransport, createTransportState } from '../../../../src/devices/virtio/mmio-transport.js';

function transport(features = 1n << 28n) {
  const levels: boolean[] = [];
  const notified: number[] = [];
  const state = createTransportState({ deviceId: 2, numQueues: 2, queueNumMax: 64, features, config: Uint8Array.of(0x11, 0x22, 0x33, 0x44, 0x55) });
  const t = new VirtioMmioTransport(state, { setLevel: (h) => levels.push(h) }, (q) => notified.push(q));
  // A second view over the same shared state, as another thread builds it.
  const other = new VirtioMmioTransport(state, { setLevel: (h) => levels.push(h) }, () => {});
  return { t, other, levels, notified };
}

/** The driver's initialisation sequence of 3.1.1, up to FEATURES_OK, with the features given. */
function negotiate(t: VirtioMmioTransport, lo: number, hi: number): number {
  t.write(R.STATUS, 4, Status.ACKNOWLEDGE);
  t.write(R.STATUS, 4, Status.ACKNOWLEDGE | Status.DRIVER);
  t.write(R.DRIVER_FEATURES_SEL, 4, 0);
  t.write(R.DRIVER_FEATURES, 4, lo);
  t.write(R.DRIVER_FEATURES_SEL, 4, 1);
  t.write(R.DRIVER_FEATURES, 4, hi);
  t.write(R.STATUS, 4, Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK);
  return t.read(R.STATUS, 4);
}

describe('virtio-mmio transport (version 2 registers)', () => {
  it('identifies itself as QEMU\'s modern transports do', () => {
    const { t } = transport();
    expect(t.read(R.MAGIC_VALUE, 4)).toBe(0x74726976);
    expect(t.read(R.VERSION, 4)).toBe(2);
    expect(t.read(R.DEVICE_ID, 4)).toBe(2);
    expect(t.read(R.VENDOR_ID, 4)).toBe(0x554d4551);
  });

  it('offers features through DeviceFeaturesSel, VERSION_1 always included', () => {
    const { t } = transport();
    t.write(R.DEVICE_FEATURES_SEL, 4, 0);
    expect(t.read(R.DEVICE_FEATURES, 4)).toBe(1 << 28);
    t.write(R.DEVICE_FEATURES_SEL, 4, 1);
    expect(t.read(R.DEVICE_FEATURES, 4)).toBe(1); // bit 32
    t.write(R.DEVICE_FEATURES_SEL, 4, 2);
    expect(t.read(R.DEVICE_FEATURES, 4)).toBe(0);
  });

  it('accepts FEATURES_OK for a subset with VERSION_1, and refuses it otherwise', () => {
    expect(negotiate(transport().t, 1 << 28, 1) & Status.FEATURES_OK).toBe(Status.FEATURES_OK);
    expect(transport().t.driverFeatures()).toBe(0n);
    const ok = transport().t;
    negotiate(ok, 1 << 28, 1);
    expect(ok.driverFeatures()).toBe((1n << 32n) | (1n << 28n));
    expect(negotiate(transport().t, 0, 0) & Status.FEATURES_OK).toBe(0); // legacy driver: no VERSION_1
    expect(negotiate(transport().t, 1 << 5, 1) & Status.FEATURES_OK).toBe(0); // a feature not offered
  });

  it('freezes the driver features once FEATURES_OK is set', () => {
    const { t } = transport();
    negotiate(t, 0, 1);
    t.write(R.DRIVER_FEATURES_SEL, 4, 0);
    t.write(R.DRIVER_FEATURES, 4, 1 << 28);
    expect(t.driverFeatures()).toBe(1n << 32n);
  });

  it('sets up queues through QueueSel, within QueueNumMax, and only while not ready', () => {
    const { t, other } = transport();
    t.write(R.QUEUE_SEL, 4, 1);
    expect(t.read(R.QUEUE_NUM_MAX, 4)).toBe(64);
    t.write(R.QUEUE_NUM, 4, 128); // above the maximum: ignored
    t.write(R.QUEUE_NUM, 4, 32);
    t.write(R.QUEUE_DESC_LOW, 4, 0x1000);
    t.write(R.QUEUE_DESC_HIGH, 4, 1);
    t.write(R.QUEUE_DRIVER_LOW, 4, 0x2000);
    t.write(R.QUEUE_DEVICE_LOW, 4, 0x3000);
    t.write(R.QUEUE_READY, 4, 1);
    t.write(R.QUEUE_DESC_LOW, 4, 0x9000); // ready: ignored
    expect(other.queueConfig(1)).toEqual({ size: 32, ready: true, desc: 0x1_0000_1000, avail: 0x2000, used: 0x3000 });
    expect(other.queueConfig(0).ready).toBe(false);
    t.write(R.QUEUE_SEL, 4, 2); // beyond the device's queues
    expect(t.read(R.QUEUE_NUM_MAX, 4)).toBe(0);
    expect(t.read(R.QUEUE_READY, 4)).toBe(0);
  });

  it('raises the line on an interrupt and lowers it only when InterruptACK clears every bit (level-triggered)', () => {
    const { t, other, levels } = transport();
    other.raiseInterrupt(Interrupt.USED_BUFFER);
    other.raiseInterrupt(Interrupt.USED_BUFFER); // already high: the line is not touched again
    expect(levels).toEqual([true]);
    expect(t.read(R.INTERRUPT_STATUS, 4)).toBe(1);
    other.raiseInterrupt(Interrupt.CONFIG_CHANGE);
    t.write(R.INTERRUPT_ACK, 4, Interrupt.USED_BUFFER);
    expect(levels).toEqual([true]);
    t.write(R.INTERRUPT_ACK, 4, Interrupt.CONFIG_CHANGE);
    expect(levels).toEqual([true, false]);
    expect(t.read(R.INTERRUPT_STATUS, 4)).toBe(0);
  });

  it('passes a QueueNotify that reaches it to the notify hook, for valid queues only', () => {
    const { t, notified } = transport();
    t.write(R.QUEUE_NOTIFY, 4, 1);
    t.write(R.QUEUE_NOTIFY, 4, 7);
    expect(notified).toEqual([1]);
  });

  it('resets on Status 0: registers, queues and interrupts, and a new epoch for the main thread', () => {
    const { t, other, levels } = transport();
    negotiate(t, 0, 1);
    t.write(R.QUEUE_SEL, 4, 0);
    t.write(R.QUEUE_NUM, 4, 16);
    t.write(R.QUEUE_READY, 4, 1);
    other.raiseInterrupt(Interrupt.USED_BUFFER);
    const epoch = other.resetEpoch;
    t.write(R.STATUS, 4, 0);
    expect(t.read(R.STATUS, 4)).toBe(0);
    expect(other.queueConfig(0)).toEqual({ size: 0, ready: false, desc: 0, avail: 0, used: 0 });
    expect(other.driverFeatures()).toBe(0n);
    expect(levels).toEqual([true, false]);
    expect(other.resetEpoch).toBe(epoch + 1);
  });

  it('DEVICE_NEEDS_RESET belongs to the device: set with a config interrupt once live, kept until reset', () => {
    const { t, other } = transport();
    negotiate(t, 0, 1);
    t.write(R.STATUS, 4, Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
    other.markNeedsReset();
    expect(t.read(R.STATUS, 4) & Status.DEVICE_NEEDS_RESET).toBe(Status.DEVICE_NEEDS_RESET);
    expect(t.read(R.INTERRUPT_STATUS, 4)).toBe(Interrupt.CONFIG_CHANGE);
    t.write(R.STATUS, 4, Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
    expect(t.read(R.STATUS, 4) & Status.DEVICE_NEEDS_RESET).toBe(Status.DEVICE_NEEDS_RESET);
    t.write(R.STATUS, 4, 0);
    expect(t.read(R.STATUS, 4)).toBe(0);
  });

  it('serves config space at any width, bumps ConfigGeneration on change, ignores narrow register accesses', () => {
    const { t, other } = transport();
    expect(t.read(R.CONFIG, 1)).toBe(0x11);
    expect(t.read(R.CONFIG + 1, 2)).toBe(0x3322);
    expect(t.read(R.CONFIG, 4)).toBe(0x44332211);
    expect(t.read(R.CONFIG + 62, 4)).toBe(0); // past the end
    const gen = t.read(R.CONFIG_GENERATION, 4);
    other.updateConfig(4, Uint8Array.of(0x66));
    expect(t.read(R.CONFIG + 4, 1)).toBe(0x66);
    expect(t.read(R.CONFIG_GENERATION, 4)).toBe(gen + 1);
    expect(t.read(R.MAGIC_VALUE, 2)).toBe(0);
  });

  it('state() and restore() carry every register by name', () => {
    const a = transport();
    negotiate(a.t, 1 << 28, 1);
    a.t.write(R.QUEUE_SEL, 4, 1);
    a.t.write(R.QUEUE_NUM, 4, 8);
    a.t.write(R.QUEUE_DESC_LOW, 4, 0x5000);
    a.t.write(R.QUEUE_READY, 4, 1);
    a.other.raiseInterrupt(Interrupt.USED_BUFFER);
    const saved = a.t.state();
    // Through the migration stream's own encoding, as a destination receives it.
    const received = parseState(stateRecord('virtio', saved).subarray(RECORD_HEADER_BYTES)).state as typeof saved;
    const b = transport();
    b.t.restore(received);
    expect(b.t.state()).toEqual(saved);
    expect(b.t.queueConfig(1)).toEqual({ size: 8, ready: true, desc: 0x5000, avail: 0, used: 0 });
    expect(b.t.read(R.INTERRUPT_STATUS, 4)).toBe(1);
    expect(() => b.t.restore({ ...saved, version: 2 as 1 })).toThrow(/version 2/);
  });
});
