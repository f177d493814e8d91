import { describe, expect, it } from 'vitest';
import type { IrqLine } from '../../../src/devices/bus-device.js';
import { I8042, I8042Command, createI8042State } from '../../../src/devices/i8042.js';
import { RtcCmos, RtcReg, createRtcState } from '../../../src/devices/rtc-cmos.js';

class Line implements IrqLine {
  levels: boolean[] = [];
  setLevel(high: boolean): void { this.levels.push(high); }
}

const DATA = 0;
const CMD = 4;

function controller() {
  const irq = new Line();
  let resets = 0;
  const dev = new I8042(createI8042State(), irq, () => { resets++; });
  return { dev, irq, resets: () => resets };
}

describe('i8042', () => {
  it('pulses the CPU reset line on command 0xFE, as Linux reboot=k writes it', () => {
    const c = controller();
    expect(c.dev.read(CMD, 1) & 0x02).toBe(0); // input buffer empty: kb_wait() goes on at once
    c.dev.write(CMD, 1, I8042Command.PULSE_RESET);
    expect(c.resets()).toBe(1);
  });

  it('resets through the output port too, and not on other pulses', () => {
    const c = controller();
    c.dev.write(CMD, 1, 0xff); // pulse no line
    expect(c.resets()).toBe(0);
    c.dev.write(CMD, 1, I8042Command.WRITE_OUTPUT_PORT);
    c.dev.write(DATA, 1, 0x02); // bit 0 (RESET#) low
    expect(c.resets()).toBe(1);
  });

  it('passes its self-tests, reports no AUX port, and keeps the command byte', () => {
    const c = controller();
    c.dev.write(CMD, 1, I8042Command.SELF_TEST);
    expect(c.dev.read(CMD, 1) & 0x01).toBe(1);
    expect(c.dev.read(DATA, 1)).toBe(0x55);
    c.dev.write(CMD, 1, I8042Command.AUX_TEST);
    expect(c.dev.read(DATA, 1)).toBe(0x01);
    c.dev.write(CMD, 1, I8042Command.WRITE_CMD_BYTE);
    c.dev.write(DATA, 1, 0x65);
    c.dev.write(CMD, 1, I8042Command.READ_CMD_BYTE);
    expect(c.dev.read(DATA, 1)).toBe(0x65);
    expect(c.dev.read(CMD, 1) & 0x01).toBe(0); // output buffer drained
  });

  it('answers keyboard commands and raises IRQ 1 for each reply byte', () => {
    const c = controller();
    c.dev.write(DATA, 1, 0xf2); // identify
    expect(c.irq.levels).toEqual([true]);
    expect([c.dev.read(DATA, 1), c.dev.read(DATA, 1), c.dev.read(DATA, 1)]).toEqual([0xfa, 0xab, 0x83]);
    // each read lowers the line and the next queued byte raises it: a fresh edge per byte
    expect(c.irq.levels).toEqual([true, false, true, false, true, false]);
  });

  it('saves and restores its named state', () => {
    const c = controller();
    c.dev.write(DATA, 1, 0xff); // reset: ACK + self-test passed, queued
    const saved = c.dev.state();
    expect(saved).toMatchObject({ version: 1, output: [0xfa, 0xaa] });
    const d = controller();
    d.dev.restore(JSON.parse(JSON.stringify(saved)));
    expect(d.dev.state()).toEqual(saved);
    expect([d.dev.read(DATA, 1), d.dev.read(DATA, 1)]).toEqual([0xfa, 0xaa]);
    expect(() => d.dev.restore({ ...saved, version: 2 as 1 })).toThrow(/version 2/);
  });
});

describe('MC146818 RTC', () => {
  // 2026-11-24 04:05:06 UTC, a Tuesday
  const host = Date.UTC(2026, 10, 24, 4, 5, 6);
  const reg = (rtc: RtcCmos, r: number) => { rtc.write(0, 1, r); return rtc.read(1, 1); };
  const set = (rtc: RtcCmos, r: number, v: number) => { rtc.write(0, 1, r); rtc.write(1, 1, v); };

  it("reads the host's time in BCD, 24-hour, by default", () => {
    const rtc = new RtcCmos(createRtcState(), () => host);
    expect([RtcReg.SECONDS, RtcReg.MINUTES, RtcReg.HOURS, RtcReg.DAY_OF_MONTH, RtcReg.MONTH, RtcReg.YEAR, RtcReg.CENTURY, RtcReg.DAY_OF_WEEK]
      .map((r) => reg(rtc, r))).toEqual([0x06, 0x05, 0x04, 0x24, 0x11, 0x26, 0x20, 0x03]);
    expect(reg(rtc, RtcReg.A) & 0x80).toBe(0); // never "update in progress"
    expect(reg(rtc, RtcReg.D)).toBe(0x80); // battery good
  });

  it('reads binary and 12-hour when register B says so', () => {
    const rtc = new RtcCmos(createRtcState(), () => Date.UTC(2026, 0, 1, 15, 0, 59));
    set(rtc, RtcReg.B, 0x04); // binary, 12-hour
    expect(reg(rtc, RtcReg.SECONDS)).toBe(59);
    expect(reg(rtc, RtcReg.HOURS)).toBe(0x80 | 3); // 3 PM
    set(rtc, RtcReg.B, 0x00); // BCD, 12-hour
    expect(reg(rtc, RtcReg.HOURS)).toBe(0x83);
  });

  it('keeps the time the guest sets, running on from it', () => {
    let now = host;
    const rtc = new RtcCmos(createRtcState(), () => now);
    set(rtc, RtcReg.B, 0x82); // SET, BCD, 24h
    set(rtc, RtcReg.YEAR, 0x99);
    set(rtc, RtcReg.CENTURY, 0x19);
    set(rtc, RtcReg.HOURS, 0x23);
    set(rtc, RtcReg.B, 0x02); // run
    now += 10_000;
    expect(reg(rtc, RtcReg.YEAR)).toBe(0x99);
    expect(reg(rtc, RtcReg.HOURS)).toBe(0x23);
    expect(reg(rtc, RtcReg.SECONDS)).toBe(0x16); // 06 + 10 s
    // The offset travels with the state, so a migrated guest keeps its clock.
    const other = new RtcCmos(createRtcState(), () => now);
    other.restore(rtc.state());
    expect(reg(other, RtcReg.YEAR)).toBe(0x99);
  });

  it('keeps CMOS RAM bytes and clears register C on read', () => {
    const rtc = new RtcCmos(createRtcState(), () => host);
    set(rtc, 0x40, 0x5a);
    expect(reg(rtc, 0x40)).toBe(0x5a);
    set(rtc, 0x40 | 0x80, 0x33); // bit 7 of the index is the NMI mask, not part of it
    expect(reg(rtc, 0x40)).toBe(0x33);
    expect(reg(rtc, RtcReg.C)).toBe(0);
    expect(rtc.read(0, 1)).toBe(0xff);
  });
});
