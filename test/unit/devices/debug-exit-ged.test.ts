import { describe, expect, it } from 'vitest';
import { DebugExit, debugExitStatus } from '../../../src/devices/debug-exit.js';
import { AcpiGedRegs, GedReg } from '../../../src/devices/acpi-ged.js';

describe('DebugExit', () => {
  it('reports (value << 1) | 1, as QEMU isa-debug-exit', () => {
    const seen: number[] = [];
    const d = new DebugExit((s) => seen.push(s));
    d.write(0, 4, 0);
    d.write(0, 1, 7);
    d.write(0, 4, 42);
    expect(seen).toEqual([1, 15, 85]);
    expect(debugExitStatus(0x7fff_ffff)).toBe(0xffff_ffff);
  });
});

describe('AcpiGedRegs', () => {
  it('powers off on SLP_EN with SLP_TYP=S5 and resets on 0x42, ignoring anything else', () => {
    const events: string[] = [];
    const g = new AcpiGedRegs({ powerOff: () => events.push('off'), reset: () => events.push('reset') });
    g.write(GedReg.SLEEP_CTL, 1, 5 << 2); // S5 without SLP_EN
    g.write(GedReg.SLEEP_CTL, 1, 0x20 | (3 << 2)); // S3 with SLP_EN
    g.write(GedReg.RESET, 1, 0x41);
    expect(events).toEqual([]);
    g.write(GedReg.SLEEP_CTL, 1, 0x34); // what guests/lib/poweroff.c writes
    g.write(GedReg.RESET, 1, 0x42);
    expect(events).toEqual(['off', 'reset']);
  });
});
