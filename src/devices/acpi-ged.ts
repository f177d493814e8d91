import type { BusDevice } from './bus-device.js';

/**
 * The register block of QEMU's ACPI Generic Event Device as microvm maps it (hw/acpi/generic_event_device.c):
 * a sleep-control byte, a sleep-status byte and a reset byte. Writing SLP_EN with SLP_TYP = S5 powers
 * the machine off; writing 0x42 to the reset register resets it. This is how a guest on microvm ends
 * cleanly (status 0) rather than through debug-exit.
 */
export const GedReg = { SLEEP_CTL: 0, SLEEP_STS: 1, RESET: 2 } as const;

const SLP_TYP_SHIFT = 2;
const SLP_TYP_MASK = 0x07;
const SLP_TYP_S5 = 0x05;
const SLP_EN = 0x20;
const RESET_VALUE = 0x42;

export interface GedActions {
  powerOff(): void;
  reset(): void;
}

export class AcpiGedRegs implements BusDevice {
  constructor(private readonly actions: GedActions) {}

  read(_offset: number, _size: number): number {
    return 0;
  }

  write(offset: number, _size: number, value: number): void {
    if (offset === GedReg.SLEEP_CTL) {
      const type = (value >> SLP_TYP_SHIFT) & SLP_TYP_MASK;
      if (value & SLP_EN && type === SLP_TYP_S5) this.actions.powerOff();
    } else if (offset === GedReg.RESET && (value & 0xff) === RESET_VALUE) {
      this.actions.reset();
    }
  }
}
