import type { BusDevice } from './bus-device.js';

/**
 * QEMU's isa-debug-exit (iobase=0xf4, iosize=4): a guest write of V ends the VM, and the VMM exits with
 * status (V << 1) | 1, so a test guest can report pass/fail through the host's exit code. Odd statuses
 * can never be confused with 0, a clean power-off.
 */
export class DebugExit implements BusDevice {
  constructor(private readonly onExit: (status: number) => void) {}

  read(_offset: number, size: number): number {
    return size >= 4 ? 0xffff_ffff : (1 << (size * 8)) - 1;
  }

  write(_offset: number, _size: number, value: number): void {
    this.onExit(debugExitStatus(value));
  }
}

/** The process exit status a debug-exit write of `value` stands for (before the kernel's & 0xff). */
export function debugExitStatus(value: number): number {
  return ((value << 1) | 1) >>> 0;
}
