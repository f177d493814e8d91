import {
  COM1_IRQ, COM1_PORT, DEBUG_EXIT_PORT, DEBUG_EXIT_SIZE, GED_REGS_ADDR, GED_REGS_SIZE, I8042_DATA_PORT, I8042_IRQ,
  I8042_WINDOW_SIZE, RTC_PORT, RTC_PORT_COUNT, VIRTIO_MMIO_BASE, VIRTIO_MMIO_SLOTS, VIRTIO_MMIO_SLOT_SIZE,
} from '../arch/x86/layout.js';
import { writeSync } from 'node:fs';
import { addon } from '../kvm/addon.js';
import { AcpiGedRegs } from '../devices/acpi-ged.js';
import type { IrqLine } from '../devices/bus-device.js';
import { DebugExit } from '../devices/debug-exit.js';
import { I8042, createI8042State } from '../devices/i8042.js';
import { RtcCmos, createRtcState } from '../devices/rtc-cmos.js';
import { IoBus } from '../devices/io-bus.js';
import { Uart8250, createUartState } from '../devices/uart8250.js';
import { signalEventfd } from '../devices/virtio/fd-watcher.js';
import { EmptyVirtioSlot, VirtioMmioTransport } from '../devices/virtio/mmio-transport.js';
import type { VirtioSlotDescription } from './virtio-devices.js';
import type { ExitBuses, VcpuStop } from '../vcpu/exit-handler.js';

/**
 * The board: which device sits at which port and address. A plain, structured-cloneable description
 * crosses into every vCPU thread, and each thread builds its own buses from it; state that more than
 * one thread touches (the UART's) lives in SharedArrayBuffers inside the description.
 */
export interface BoardDescription {
  readonly vmFd: number;
  /** The UART's register file (see Uart8250): shared by every vCPU thread and the main thread. */
  readonly uartState: Int32Array;
  /** File descriptor the UART transmits to (1 for stdio, or an opened file). */
  readonly serialOutputFd: number;
  /** The occupied virtio-mmio slots; the others hold empty transports, as on microvm. */
  readonly virtio: readonly VirtioSlotDescription[];
  /** The i8042's registers and output queue (see I8042), shared like the UART's. */
  readonly i8042State: Int32Array;
  /** The RTC's CMOS RAM and clock offset (see RtcCmos), shared like the UART's. */
  readonly rtcState: Int32Array;
}

/** A board description with every device at its power-on state. */
export function newBoard(vmFd: number, serialOutputFd: number, virtio: readonly VirtioSlotDescription[] = []): BoardDescription {
  return { vmFd, uartState: createUartState(), serialOutputFd, i8042State: createI8042State(), rtcState: createRtcState(), virtio };
}

/** An interrupt line into KVM's in-kernel PIC/IOAPIC, by GSI. */
export class KvmIrqLine implements IrqLine {
  constructor(private readonly vmFd: number, private readonly gsi: number) {}
  setLevel(high: boolean): void {
    addon().kvmIrqLine(this.vmFd, this.gsi, high ? 1 : 0);
  }
}

export interface BoardHooks {
  /** A device asks for the VM to stop (debug-exit, power-off, reset). */
  requestStop(stop: VcpuStop): void;
  /** Transmit one byte from the UART. */
  transmit(byte: number): void;
}

/**
 * A UART transmit callback that writes each byte to `fd` as it is sent (no buffering: the guest may
 * prompt). Node makes a stdout pipe non-blocking, so a reader slower than the guest (a test harness, a
 * pager) fills the pipe and the write fails with EAGAIN: the byte is then retried after a millisecond's
 * nap, so the guest's transmitter waits for the reader as a real line would, and nothing is lost.
 */
export function fdTransmitter(fd: number): (byte: number) => void {
  const one = new Uint8Array(1);
  const nap = new Int32Array(new SharedArrayBuffer(4));
  return (b) => {
    one[0] = b;
    for (;;) {
      try {
        writeSync(fd, one);
        return;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
        Atomics.wait(nap, 0, 0, 1);
      }
    }
  };
}

export function comPortUart(board: BoardDescription, transmit: (byte: number) => void): Uart8250 {
  return new Uart8250(board.uartState, new KvmIrqLine(board.vmFd, COM1_IRQ), transmit);
}

/** The i8042; `onReset` runs when the guest pulses the CPU reset line (Linux `reboot`). */
export function keyboardController(board: BoardDescription, onReset: () => void): I8042 {
  return new I8042(board.i8042State, new KvmIrqLine(board.vmFd, I8042_IRQ), onReset);
}

export function cmosRtc(board: BoardDescription): RtcCmos {
  return new RtcCmos(board.rtcState);
}

/** The devices every board has, as a migration peer compares them (name@address). */
export const BOARD_DEVICES: readonly string[] = [
  `uart8250@0x${COM1_PORT.toString(16)}`,
  `isa-debug-exit@0x${DEBUG_EXIT_PORT.toString(16)}`,
  `acpi-ged@0x${GED_REGS_ADDR.toString(16)}`,
  `i8042@0x${I8042_DATA_PORT.toString(16)}`,
  `mc146818-rtc@0x${RTC_PORT.toString(16)}`,
];

/** Every device buildBuses places for `board`: the fixed ones, then the virtio devices by slot. */
export function boardDevices(board: Pick<BoardDescription, 'virtio'>): string[] {
  return [...BOARD_DEVICES, ...board.virtio.map((v) => v.name)];
}

/** Builds this thread's buses for `board`. */
export function buildBuses(board: BoardDescription, hooks: BoardHooks): ExitBuses {
  const pio = new IoBus('port I/O');
  const mmio = new IoBus('MMIO');
  pio.register(COM1_PORT, 8, comPortUart(board, hooks.transmit), 'serial (COM1)');
  pio.register(DEBUG_EXIT_PORT, DEBUG_EXIT_SIZE, new DebugExit((status) => hooks.requestStop({ kind: 'guest-exit', status })), 'isa-debug-exit');
  pio.register(I8042_DATA_PORT, I8042_WINDOW_SIZE, keyboardController(board, () => hooks.requestStop({ kind: 'reset' })), 'i8042');
  pio.register(RTC_PORT, RTC_PORT_COUNT, cmosRtc(board), 'rtc (MC146818)');
  mmio.register(GED_REGS_ADDR, GED_REGS_SIZE, new AcpiGedRegs({
    powerOff: () => hooks.requestStop({ kind: 'poweroff' }),
    reset: () => hooks.requestStop({ kind: 'reset' }),
  }), 'acpi-ged registers');
  for (let slot = 0; slot < VIRTIO_MMIO_SLOTS; slot++) {
    const base = VIRTIO_MMIO_BASE + slot * VIRTIO_MMIO_SLOT_SIZE;
    const v = board.virtio.find((d) => d.base === base);
    const device = v === undefined
      ? new EmptyVirtioSlot()
      : new VirtioMmioTransport(v.state, new KvmIrqLine(board.vmFd, v.gsi), (q) => signalEventfd(v.notifyFds[q]!));
    mmio.register(base, VIRTIO_MMIO_SLOT_SIZE, device, v?.name ?? `virtio-mmio slot ${slot} (empty)`);
  }
  return { pio, mmio };
}
