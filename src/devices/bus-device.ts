/**
 * A device as the buses see it: a pure state machine addressed by offset within its own window, never
 * by absolute address, and doing no host I/O of its own (backends and interrupt lines are injected).
 * Sizes are 1, 2 or 4 bytes; values are unsigned.
 */
export interface BusDevice {
  read(offset: number, size: number): number;
  write(offset: number, size: number, value: number): void;
}

/** An interrupt line into the in-kernel irqchip, raised and lowered by level. */
export interface IrqLine {
  setLevel(high: boolean): void;
}
