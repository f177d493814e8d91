import type { BusDevice, IrqLine } from '../bus-device.js';
import {
  Feature, Interrupt, MmioReg, Status, VIRTIO_MMIO_MAGIC, VIRTIO_MMIO_VENDOR_ID, VIRTIO_MMIO_VERSION,
} from './constants.js';

/**
 * The virtio-mmio transport (virtio 1.x, section 4.2, version 2 registers) as a pure state machine
 * over a register file in a SharedArrayBuffer. Two kinds of thread touch it: vCPU threads, which take
 * the guest's MMIO exits (feature negotiation, queue setup, status, interrupt ACK, config reads), and
 * the main thread, which processes the queues and raises interrupts. Every access takes the spinlock
 * in word 0, as the UART's does.
 *
 * QueueNotify normally never reaches this class: KVM_IOEVENTFD turns the guest's write into an eventfd
 * signal without leaving the kernel. A notify that does arrive here (an access KVM's ioeventfd did not
 * match, e.g. a 2-byte write) is passed to `notify`, which signals the same eventfd.
 */

/** Queues a transport can carry (net: rx + tx; blk: one). */
export const MAX_QUEUES = 4;
/** Bytes of device-specific configuration space a transport holds. */
export const CONFIG_BYTES = 64;

/** Indices of the state words. */
const S = {
  LOCK: 0,
  STATUS: 1,
  DEVICE_FEATURES_SEL: 2,
  DRIVER_FEATURES_SEL: 3,
  DRIVER_FEATURES_LO: 4,
  DRIVER_FEATURES_HI: 5,
  QUEUE_SEL: 6,
  INTERRUPT_STATUS: 7,
  CONFIG_GENERATION: 8,
  /** Incremented by every device reset: the main thread drops queue state of an older epoch. */
  RESET_EPOCH: 9,
  /** The level last driven on the IRQ line, so the line is only touched on change. */
  IRQ_LEVEL: 10,
  DEVICE_FEATURES_LO: 11,
  DEVICE_FEATURES_HI: 12,
  DEVICE_ID: 13,
  NUM_QUEUES: 14,
  QUEUE_NUM_MAX: 15,
  QUEUES: 16,
} as const;
/** Words per queue, at S.QUEUES + q * Q_WORDS. */
const Q = { NUM: 0, READY: 1, DESC_LO: 2, DESC_HI: 3, DRIVER_LO: 4, DRIVER_HI: 5, DEVICE_LO: 6, DEVICE_HI: 7 } as const;
const Q_WORDS = 8;
const CONFIG_WORD = S.QUEUES + MAX_QUEUES * Q_WORDS;
/** Int32 words of state one transport needs. */
export const TRANSPORT_STATE_WORDS = CONFIG_WORD + CONFIG_BYTES / 4;

/** What a device offers: set once, by the main thread, before the guest runs. */
export interface TransportIdentity {
  readonly deviceId: number;
  readonly numQueues: number;
  readonly queueNumMax: number;
  /** 64 feature bits; VERSION_1 is added. */
  readonly features: bigint;
  /** The initial device-specific configuration space (at most CONFIG_BYTES). */
  readonly config: Uint8Array;
}

export function createTransportState(identity: TransportIdentity): Int32Array {
  if (identity.numQueues < 1 || identity.numQueues > MAX_QUEUES) throw new RangeError(`a virtio transport carries 1 to ${MAX_QUEUES} queues`);
  if (identity.config.length > CONFIG_BYTES) throw new RangeError(`virtio config space of ${identity.config.length} bytes exceeds ${CONFIG_BYTES}`);
  const s = new Int32Array(new SharedArrayBuffer(TRANSPORT_STATE_WORDS * 4));
  const features = identity.features | (1n << BigInt(Feature.VERSION_1));
  s[S.DEVICE_FEATURES_LO] = Number(features & 0xffff_ffffn) | 0;
  s[S.DEVICE_FEATURES_HI] = Number(features >> 32n) | 0;
  s[S.DEVICE_ID] = identity.deviceId;
  s[S.NUM_QUEUES] = identity.numQueues;
  s[S.QUEUE_NUM_MAX] = identity.queueNumMax;
  configBytes(s).set(identity.config);
  return s;
}

function configBytes(s: Int32Array): Uint8Array {
  return new Uint8Array(s.buffer, s.byteOffset + CONFIG_WORD * 4, CONFIG_BYTES);
}

/** A queue as the driver configured it. */
export interface QueueConfig {
  readonly size: number;
  readonly ready: boolean;
  readonly desc: number;
  readonly avail: number;
  readonly used: number;
}

/** The named, versioned register state of a transport (device config space included). */
export interface TransportState {
  version: 1;
  status: number;
  deviceFeaturesSel: number;
  driverFeaturesSel: number;
  driverFeatures: string; // a bigint, in hex
  queueSel: number;
  interruptStatus: number;
  configGeneration: number;
  queues: { num: number; ready: boolean; desc: string; driver: string; device: string }[];
  config: Uint8Array;
}

export class VirtioMmioTransport implements BusDevice {
  private readonly config: Uint8Array;

  constructor(
    private readonly s: Int32Array,
    private readonly irq: IrqLine,
    /** A QueueNotify the kernel's ioeventfd did not take; signals the queue's eventfd. */
    private readonly notify: (queue: number) => void,
  ) {
    if (s.length < TRANSPORT_STATE_WORDS) throw new RangeError('VirtioMmioTransport: state array too small');
    this.config = configBytes(s);
  }

  read(offset: number, size: number): number {
    if (offset >= MmioReg.CONFIG) return this.readConfig(offset - MmioReg.CONFIG, size);
    // 4.2.2.2: the driver MUST use only 32-bit wide and aligned reads of the other registers.
    if (size !== 4 || offset % 4 !== 0) return 0;
    this.lock();
    try {
      return this.readRegister(offset) >>> 0;
    } finally {
      this.unlock();
    }
  }

  write(offset: number, size: number, value: number): void {
    if (offset >= MmioReg.CONFIG) return; // no device here has writable config fields
    if (size !== 4 || offset % 4 !== 0) return;
    if (offset === MmioReg.QUEUE_NOTIFY) {
      if (value >>> 0 < Atomics.load(this.s, S.NUM_QUEUES)) this.notify(value >>> 0);
      return;
    }
    this.lock();
    try {
      this.writeRegister(offset, value >>> 0);
    } finally {
      this.unlock();
    }
  }

  // --- the main thread's side -----------------------------------------------------------------

  get deviceId(): number {
    return this.s[S.DEVICE_ID]!;
  }

  get numQueues(): number {
    return this.s[S.NUM_QUEUES]!;
  }

  /** Device reset count: queue state kept by the main thread is valid only within one epoch. */
  get resetEpoch(): number {
    return Atomics.load(this.s, S.RESET_EPOCH);
  }

  get status(): number {
    return Atomics.load(this.s, S.STATUS);
  }

  /** The 64 feature bits the driver accepted (meaningful once FEATURES_OK is set). */
  driverFeatures(): bigint {
    this.lock();
    try {
      return featureWord(this.s[S.DRIVER_FEATURES_LO]!, this.s[S.DRIVER_FEATURES_HI]!);
    } finally {
      this.unlock();
    }
  }

  queueConfig(q: number): QueueConfig {
    this.lock();
    try {
      const b = S.QUEUES + q * Q_WORDS;
      const s = this.s;
      return {
        size: s[b + Q.NUM]!,
        ready: s[b + Q.READY] === 1,
        desc: address(s[b + Q.DESC_LO]!, s[b + Q.DESC_HI]!),
        avail: address(s[b + Q.DRIVER_LO]!, s[b + Q.DRIVER_HI]!),
        used: address(s[b + Q.DEVICE_LO]!, s[b + Q.DEVICE_HI]!),
      };
    } finally {
      this.unlock();
    }
  }

  /** Sets InterruptStatus bits and raises the line (level-triggered: it stays up until InterruptACK). */
  raiseInterrupt(bits: number): void {
    this.lock();
    try {
      this.s[S.INTERRUPT_STATUS] = this.s[S.INTERRUPT_STATUS]! | bits;
      this.updateIrq();
    } finally {
      this.unlock();
    }
  }

  /**
   * 2.1.2: the device hit an error it cannot recover from (a malformed queue from the guest): it sets
   * DEVICE_NEEDS_RESET and, the driver being live, notifies a configuration change.
   */
  markNeedsReset(): void {
    this.lock();
    try {
      const status = this.s[S.STATUS]!;
      this.s[S.STATUS] = status | Status.DEVICE_NEEDS_RESET;
      if (status & Status.DRIVER_OK) {
        this.s[S.INTERRUPT_STATUS] = this.s[S.INTERRUPT_STATUS]! | Interrupt.CONFIG_CHANGE;
        this.updateIrq();
      }
    } finally {
      this.unlock();
    }
  }

  /** Changes device configuration bytes (link status), bumping ConfigGeneration and notifying the driver. */
  updateConfig(offset: number, bytes: Uint8Array): void {
    this.lock();
    try {
      this.config.set(bytes, offset);
      this.s[S.CONFIG_GENERATION] = (this.s[S.CONFIG_GENERATION]! + 1) | 0;
      if (this.s[S.STATUS]! & Status.DRIVER_OK) {
        this.s[S.INTERRUPT_STATUS] = this.s[S.INTERRUPT_STATUS]! | Interrupt.CONFIG_CHANGE;
        this.updateIrq();
      }
    } finally {
      this.unlock();
    }
  }

  state(): TransportState {
    this.lock();
    try {
      const s = this.s;
      const queues: TransportState['queues'] = [];
      for (let q = 0; q < s[S.NUM_QUEUES]!; q++) {
        const b = S.QUEUES + q * Q_WORDS;
        queues.push({
          num: s[b + Q.NUM]!, ready: s[b + Q.READY] === 1,
          desc: hex(address(s[b + Q.DESC_LO]!, s[b + Q.DESC_HI]!)),
          driver: hex(address(s[b + Q.DRIVER_LO]!, s[b + Q.DRIVER_HI]!)),
          device: hex(address(s[b + Q.DEVICE_LO]!, s[b + Q.DEVICE_HI]!)),
        });
      }
      return {
        version: 1, status: s[S.STATUS]!, deviceFeaturesSel: s[S.DEVICE_FEATURES_SEL]!,
        driverFeaturesSel: s[S.DRIVER_FEATURES_SEL]!,
        driverFeatures: featureWord(s[S.DRIVER_FEATURES_LO]!, s[S.DRIVER_FEATURES_HI]!).toString(16),
        queueSel: s[S.QUEUE_SEL]!, interruptStatus: s[S.INTERRUPT_STATUS]!, configGeneration: s[S.CONFIG_GENERATION]!,
        queues, config: this.config.slice(),
      };
    } finally {
      this.unlock();
    }
  }

  /** Loads a saved state, as on a migration's destination (before its vCPUs run). */
  restore(state: TransportState): void {
    if (state.version !== 1) throw new Error(`virtio-mmio state version ${state.version} is not supported (this tsvmm reads version 1)`);
    this.lock();
    try {
      const s = this.s;
      if (state.queues.length !== s[S.NUM_QUEUES]) throw new Error(`virtio-mmio state has ${state.queues.length} queues; this device has ${s[S.NUM_QUEUES]}`);
      s[S.STATUS] = state.status;
      s[S.DEVICE_FEATURES_SEL] = state.deviceFeaturesSel;
      s[S.DRIVER_FEATURES_SEL] = state.driverFeaturesSel;
      const f = BigInt(`0x${state.driverFeatures}`);
      s[S.DRIVER_FEATURES_LO] = Number(f & 0xffff_ffffn) | 0;
      s[S.DRIVER_FEATURES_HI] = Number(f >> 32n) | 0;
      s[S.QUEUE_SEL] = state.queueSel;
      s[S.INTERRUPT_STATUS] = state.interruptStatus;
      s[S.CONFIG_GENERATION] = state.configGeneration;
      state.queues.forEach((q, i) => {
        const b = S.QUEUES + i * Q_WORDS;
        s[b + Q.NUM] = q.num;
        s[b + Q.READY] = q.ready ? 1 : 0;
        setAddress(s, b + Q.DESC_LO, BigInt(`0x${q.desc}`));
        setAddress(s, b + Q.DRIVER_LO, BigInt(`0x${q.driver}`));
        setAddress(s, b + Q.DEVICE_LO, BigInt(`0x${q.device}`));
      });
      this.config.set(state.config.subarray(0, CONFIG_BYTES));
      s[S.RESET_EPOCH] = (s[S.RESET_EPOCH]! + 1) | 0;
      // The line's level lives in the irqchip state, restored with it; drive ours to match.
      s[S.IRQ_LEVEL] = s[S.INTERRUPT_STATUS] !== 0 ? 1 : 0;
    } finally {
      this.unlock();
    }
  }

  // --- registers ------------------------------------------------------------------------------

  private readRegister(offset: number): number {
    const s = this.s;
    const qb = S.QUEUES + s[S.QUEUE_SEL]! * Q_WORDS;
    const queueValid = s[S.QUEUE_SEL]! < s[S.NUM_QUEUES]!;
    switch (offset) {
      case MmioReg.MAGIC_VALUE: return VIRTIO_MMIO_MAGIC;
      case MmioReg.VERSION: return VIRTIO_MMIO_VERSION;
      case MmioReg.DEVICE_ID: return s[S.DEVICE_ID]!;
      case MmioReg.VENDOR_ID: return VIRTIO_MMIO_VENDOR_ID;
      case MmioReg.DEVICE_FEATURES: {
        const sel = s[S.DEVICE_FEATURES_SEL]!;
        return sel === 0 ? s[S.DEVICE_FEATURES_LO]! : sel === 1 ? s[S.DEVICE_FEATURES_HI]! : 0;
      }
      case MmioReg.QUEUE_NUM_MAX: return queueValid ? s[S.QUEUE_NUM_MAX]! : 0;
      case MmioReg.QUEUE_NUM: return queueValid ? s[qb + Q.NUM]! : 0;
      case MmioReg.QUEUE_READY: return queueValid ? s[qb + Q.READY]! : 0;
      case MmioReg.INTERRUPT_STATUS: return s[S.INTERRUPT_STATUS]!;
      case MmioReg.STATUS: return s[S.STATUS]!;
      case MmioReg.QUEUE_DESC_LOW: return queueValid ? s[qb + Q.DESC_LO]! : 0;
      case MmioReg.QUEUE_DESC_HIGH: return queueValid ? s[qb + Q.DESC_HI]! : 0;
      case MmioReg.QUEUE_DRIVER_LOW: return queueValid ? s[qb + Q.DRIVER_LO]! : 0;
      case MmioReg.QUEUE_DRIVER_HIGH: return queueValid ? s[qb + Q.DRIVER_HI]! : 0;
      case MmioReg.QUEUE_DEVICE_LOW: return queueValid ? s[qb + Q.DEVICE_LO]! : 0;
      case MmioReg.QUEUE_DEVICE_HIGH: return queueValid ? s[qb + Q.DEVICE_HI]! : 0;
      case MmioReg.CONFIG_GENERATION: return s[S.CONFIG_GENERATION]!;
      default: return 0; // write-only and reserved registers read as 0, as QEMU's do
    }
  }

  private writeRegister(offset: number, value: number): void {
    const s = this.s;
    const sel = s[S.QUEUE_SEL]!;
    const qb = S.QUEUES + sel * Q_WORDS;
    const queueValid = sel < s[S.NUM_QUEUES]!;
    // 4.2.3.2: queue addresses and size may only change while the queue is not ready.
    const queueWritable = queueValid && s[qb + Q.READY] === 0;
    switch (offset) {
      case MmioReg.DEVICE_FEATURES_SEL: s[S.DEVICE_FEATURES_SEL] = value; return;
      case MmioReg.DRIVER_FEATURES_SEL: s[S.DRIVER_FEATURES_SEL] = value; return;
      case MmioReg.DRIVER_FEATURES: {
        // Features are fixed once FEATURES_OK is set (3.1.1 step 5).
        if (s[S.STATUS]! & Status.FEATURES_OK) return;
        const w = s[S.DRIVER_FEATURES_SEL]!;
        if (w === 0) s[S.DRIVER_FEATURES_LO] = value | 0;
        else if (w === 1) s[S.DRIVER_FEATURES_HI] = value | 0;
        return;
      }
      case MmioReg.QUEUE_SEL: s[S.QUEUE_SEL] = value; return;
      case MmioReg.QUEUE_NUM:
        if (queueWritable && value >= 1 && value <= s[S.QUEUE_NUM_MAX]!) s[qb + Q.NUM] = value;
        return;
      case MmioReg.QUEUE_READY:
        if (queueValid) s[qb + Q.READY] = value & 1;
        return;
      case MmioReg.INTERRUPT_ACK:
        s[S.INTERRUPT_STATUS] = s[S.INTERRUPT_STATUS]! & ~value;
        this.updateIrq();
        return;
      case MmioReg.STATUS:
        if (value === 0) this.reset();
        else this.setStatus(value);
        return;
      case MmioReg.QUEUE_DESC_LOW: if (queueWritable) s[qb + Q.DESC_LO] = value | 0; return;
      case MmioReg.QUEUE_DESC_HIGH: if (queueWritable) s[qb + Q.DESC_HI] = value | 0; return;
      case MmioReg.QUEUE_DRIVER_LOW: if (queueWritable) s[qb + Q.DRIVER_LO] = value | 0; return;
      case MmioReg.QUEUE_DRIVER_HIGH: if (queueWritable) s[qb + Q.DRIVER_HI] = value | 0; return;
      case MmioReg.QUEUE_DEVICE_LOW: if (queueWritable) s[qb + Q.DEVICE_LO] = value | 0; return;
      case MmioReg.QUEUE_DEVICE_HIGH: if (queueWritable) s[qb + Q.DEVICE_HI] = value | 0; return;
      default: return; // read-only and reserved registers ignore writes
    }
  }

  private setStatus(value: number): void {
    const s = this.s;
    let next = value & 0xff;
    const before = s[S.STATUS]!;
    // The device owns DEVICE_NEEDS_RESET: the driver can neither set nor clear it except by reset.
    next = (next & ~Status.DEVICE_NEEDS_RESET) | (before & Status.DEVICE_NEEDS_RESET);
    if (next & Status.FEATURES_OK && !(before & Status.FEATURES_OK)) {
      // 2.2.2: accept only a subset of what we offered, and 6.1: a modern device needs VERSION_1.
      const offered = featureWord(s[S.DEVICE_FEATURES_LO]!, s[S.DEVICE_FEATURES_HI]!);
      const accepted = featureWord(s[S.DRIVER_FEATURES_LO]!, s[S.DRIVER_FEATURES_HI]!);
      const ok = (accepted & ~offered) === 0n && (accepted & (1n << BigInt(Feature.VERSION_1))) !== 0n;
      if (!ok) next &= ~Status.FEATURES_OK; // the driver re-reads status and sees the refusal
    }
    s[S.STATUS] = next;
  }

  /** 2.1.2 / 4.2.3.1: writing 0 to Status resets the device: registers, queues and interrupts. */
  private reset(): void {
    const s = this.s;
    s[S.STATUS] = 0;
    s[S.DEVICE_FEATURES_SEL] = 0;
    s[S.DRIVER_FEATURES_SEL] = 0;
    s[S.DRIVER_FEATURES_LO] = 0;
    s[S.DRIVER_FEATURES_HI] = 0;
    s[S.QUEUE_SEL] = 0;
    s.fill(0, S.QUEUES, S.QUEUES + MAX_QUEUES * Q_WORDS);
    s[S.INTERRUPT_STATUS] = 0;
    Atomics.add(s, S.RESET_EPOCH, 1);
    this.updateIrq();
  }

  private readConfig(offset: number, size: number): number {
    if (offset + size > CONFIG_BYTES) return 0;
    this.lock();
    try {
      let v = 0;
      for (let i = 0; i < size; i++) v |= this.config[offset + i]! << (8 * i);
      return v >>> 0;
    } finally {
      this.unlock();
    }
  }

  private updateIrq(): void {
    const level = this.s[S.INTERRUPT_STATUS] !== 0 ? 1 : 0;
    if (level !== this.s[S.IRQ_LEVEL]) {
      this.s[S.IRQ_LEVEL] = level;
      this.irq.setLevel(level === 1);
    }
  }

  private lock(): void {
    // Critical sections are a few dozen instructions (plus at most one KVM_IRQ_LINE), so spinning
    // beats sleeping.
    while (Atomics.compareExchange(this.s, S.LOCK, 0, 1) !== 0) { /* spin */ }
  }

  private unlock(): void {
    Atomics.store(this.s, S.LOCK, 0);
  }
}

function featureWord(lo: number, hi: number): bigint {
  return (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
}

/** A 64-bit guest address from two words; above 2^53 it is not RAM anyway, and the queue rejects it. */
function address(lo: number, hi: number): number {
  return (hi >>> 0) * 0x1_0000_0000 + (lo >>> 0);
}

function setAddress(s: Int32Array, at: number, value: bigint): void {
  s[at] = Number(value & 0xffff_ffffn) | 0;
  s[at + 1] = Number(value >> 32n) | 0;
}

function hex(n: number): string {
  return n.toString(16);
}

/**
 * A virtio-mmio slot with no device behind it, as QEMU's microvm leaves its unused transports: the
 * magic and version read as usual and DeviceID reads 0 ("no device", 4.2.3.1.1), everything else 0.
 */
export class EmptyVirtioSlot implements BusDevice {
  read(offset: number, size: number): number {
    if (size !== 4) return 0;
    if (offset === MmioReg.MAGIC_VALUE) return VIRTIO_MMIO_MAGIC;
    if (offset === MmioReg.VERSION) return VIRTIO_MMIO_VERSION;
    if (offset === MmioReg.VENDOR_ID) return VIRTIO_MMIO_VENDOR_ID;
    return 0;
  }

  write(): void {}
}
