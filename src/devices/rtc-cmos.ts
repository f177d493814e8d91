import type { BusDevice } from './bus-device.js';
import { withSharedLock } from './shared-lock.js';

/**
 * An MC146818 CMOS real-time clock with its 128 bytes of CMOS RAM (index port 0x70, data port 0x71),
 * so the guest reads the time at boot (Linux's mach_get_cmos_time, rtc_cmos, hwclock). The clock is
 * the host's (UTC, through the injected `now`) plus an offset the guest sets by writing the time
 * registers; values are BCD or binary and 24- or 12-hour as register B says. The update-in-progress
 * bit always reads 0 (an update is instantaneous here), and no periodic, alarm or update interrupt is
 * raised: Linux reads the time by polling, and its rtc core emulates update interrupts when asked.
 *
 * Offsets: 0 = index (bit 7 is the NMI mask, ignored), 1 = data. State in a shared Int32Array, as the
 * UART's, because any vCPU thread may take the exit.
 */

/** Register numbers (MC146818 datasheet). */
export const RtcReg = {
  SECONDS: 0x00,
  MINUTES: 0x02,
  HOURS: 0x04,
  DAY_OF_WEEK: 0x06,
  DAY_OF_MONTH: 0x07,
  MONTH: 0x08,
  YEAR: 0x09,
  A: 0x0a,
  B: 0x0b,
  C: 0x0c,
  D: 0x0d,
  /** The century byte QEMU and PC BIOSes keep (ACPI FADT's default "century" index). */
  CENTURY: 0x32,
} as const;
const TIME_REGS: ReadonlySet<number> = new Set([
  RtcReg.SECONDS, RtcReg.MINUTES, RtcReg.HOURS, RtcReg.DAY_OF_WEEK, RtcReg.DAY_OF_MONTH, RtcReg.MONTH, RtcReg.YEAR, RtcReg.CENTURY,
]);

const REG_A_UIP = 0x80;
/** Register A at power-on: 32.768 kHz time base, 1024 Hz periodic rate (what PC BIOSes program). */
const REG_A_DEFAULT = 0x26;
const REG_B_SET = 0x80;
const REG_B_DM_BINARY = 0x04;
const REG_B_24H = 0x02;
/** Register D bit 7: valid RAM and time (the battery is good). */
const REG_D_VRT = 0x80;
const HOUR_PM = 0x80;
const CMOS_BYTES = 128;

const S = { LOCK: 0, INDEX: 1, OFFSET_SECONDS: 2, CMOS: 3 } as const;
export const RTC_STATE_WORDS = S.CMOS + CMOS_BYTES;

export function createRtcState(): Int32Array {
  const s = new Int32Array(new SharedArrayBuffer(RTC_STATE_WORDS * 4));
  s[S.CMOS + RtcReg.A] = REG_A_DEFAULT;
  s[S.CMOS + RtcReg.B] = REG_B_24H;
  s[S.CMOS + RtcReg.D] = REG_D_VRT;
  return s;
}

/** The named, versioned state: CMOS RAM, the selected index, and the guest clock's offset from the host's. */
export interface RtcState {
  version: 1;
  index: number;
  offsetSeconds: number;
  cmos: number[];
}

const toBcd = (n: number) => ((Math.floor(n / 10) << 4) | (n % 10)) & 0xff;
const fromBcd = (b: number) => (b >> 4) * 10 + (b & 0x0f);

export class RtcCmos implements BusDevice {
  constructor(
    private readonly s: Int32Array,
    /** Host time in milliseconds since the epoch (Date.now in production; a fixed clock in tests). */
    private readonly now: () => number = Date.now,
  ) {
    if (s.length < RTC_STATE_WORDS) throw new RangeError('RtcCmos: state array too small');
  }

  read(offset: number, _size: number): number {
    return withSharedLock(this.s, S.LOCK, () => {
      if (offset === 0) return 0xff; // the index port is write-only
      const index = this.s[S.INDEX]!;
      const cmos = S.CMOS + index;
      if (TIME_REGS.has(index) && !(this.regB() & REG_B_SET)) return this.timeRegister(index, this.guestSeconds());
      if (index === RtcReg.A) return this.s[cmos]! & ~REG_A_UIP;
      if (index === RtcReg.C) {
        const flags = this.s[cmos]!;
        this.s[cmos] = 0; // reading register C acknowledges every flag
        return flags;
      }
      return this.s[cmos]!;
    });
  }

  write(offset: number, _size: number, value: number): void {
    withSharedLock(this.s, S.LOCK, () => {
      const byte = value & 0xff;
      if (offset === 0) {
        this.s[S.INDEX] = byte & 0x7f;
        return;
      }
      const index = this.s[S.INDEX]!;
      if (index === RtcReg.C || index === RtcReg.D) return; // read-only
      if (index === RtcReg.B) {
        const before = this.regB();
        // Entering SET freezes the current time into the registers; leaving it starts the clock from them.
        if (byte & REG_B_SET && !(before & REG_B_SET)) this.freezeTime();
        this.s[S.CMOS + RtcReg.B] = byte;
        if (!(byte & REG_B_SET) && before & REG_B_SET) this.startTimeFromRegisters();
        return;
      }
      if (TIME_REGS.has(index)) {
        const running = !(this.regB() & REG_B_SET);
        if (running) this.freezeTime();
        this.s[S.CMOS + index] = byte;
        if (running) this.startTimeFromRegisters();
        return;
      }
      this.s[S.CMOS + index] = byte;
    });
  }

  state(): RtcState {
    return withSharedLock(this.s, S.LOCK, () => ({
      version: 1,
      index: this.s[S.INDEX]!,
      offsetSeconds: this.s[S.OFFSET_SECONDS]!,
      cmos: Array.from(this.s.subarray(S.CMOS, S.CMOS + CMOS_BYTES)),
    }));
  }

  restore(state: RtcState): void {
    if (state.version !== 1) throw new Error(`RTC state version ${state.version} is not supported (this tsvmm reads version 1)`);
    if (state.cmos.length !== CMOS_BYTES) throw new Error(`RTC state has ${state.cmos.length} CMOS bytes, not ${CMOS_BYTES}`);
    withSharedLock(this.s, S.LOCK, () => {
      this.s[S.INDEX] = state.index;
      this.s[S.OFFSET_SECONDS] = state.offsetSeconds;
      this.s.set(state.cmos, S.CMOS);
    });
  }

  private regB(): number {
    return this.s[S.CMOS + RtcReg.B]!;
  }

  private guestSeconds(): number {
    return Math.floor(this.now() / 1000) + this.s[S.OFFSET_SECONDS]!;
  }

  /** Register `index` for the time `seconds` (UTC), in the format register B selects. */
  private timeRegister(index: number, seconds: number): number {
    const d = new Date(seconds * 1000);
    const b = this.regB();
    const enc = (n: number) => (b & REG_B_DM_BINARY ? n : toBcd(n));
    switch (index) {
      case RtcReg.SECONDS: return enc(d.getUTCSeconds());
      case RtcReg.MINUTES: return enc(d.getUTCMinutes());
      case RtcReg.HOURS: {
        const h = d.getUTCHours();
        if (b & REG_B_24H) return enc(h);
        return enc(h % 12 === 0 ? 12 : h % 12) | (h >= 12 ? HOUR_PM : 0);
      }
      case RtcReg.DAY_OF_WEEK: return enc(d.getUTCDay() + 1);
      case RtcReg.DAY_OF_MONTH: return enc(d.getUTCDate());
      case RtcReg.MONTH: return enc(d.getUTCMonth() + 1);
      case RtcReg.YEAR: return enc(d.getUTCFullYear() % 100);
      default: return enc(Math.floor(d.getUTCFullYear() / 100)); // CENTURY
    }
  }

  /** Copies the running time into the registers (they then hold it while SET is on). */
  private freezeTime(): void {
    const now = this.guestSeconds();
    for (const r of TIME_REGS) this.s[S.CMOS + r] = this.timeRegister(r, now);
  }

  /** Sets the offset so the clock runs on from the time in the registers. */
  private startTimeFromRegisters(): void {
    const b = this.regB();
    const dec = (r: number) => (b & REG_B_DM_BINARY ? this.s[S.CMOS + r]! : fromBcd(this.s[S.CMOS + r]!));
    let hours = dec(RtcReg.HOURS);
    if (!(b & REG_B_24H)) {
      const raw = this.s[S.CMOS + RtcReg.HOURS]!;
      hours = (b & REG_B_DM_BINARY ? raw & 0x7f : fromBcd(raw & 0x7f)) % 12 + (raw & HOUR_PM ? 12 : 0);
    }
    const year = dec(RtcReg.CENTURY) * 100 + dec(RtcReg.YEAR);
    const set = Date.UTC(year, dec(RtcReg.MONTH) - 1, dec(RtcReg.DAY_OF_MONTH), hours, dec(RtcReg.MINUTES), dec(RtcReg.SECONDS)) / 1000;
    this.s[S.OFFSET_SECONDS] = set - Math.floor(this.now() / 1000);
  }
}
