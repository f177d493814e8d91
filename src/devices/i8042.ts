import type { BusDevice, IrqLine } from './bus-device.js';
import { withSharedLock } from './shared-lock.js';

/**
 * An 8042 keyboard controller with what Linux needs and nothing more: the status and command-byte
 * registers, the controller self-tests, an AT keyboard that acknowledges commands (so atkbd's probe
 * answers at once instead of timing out), no AUX (mouse) port, and the reset line: command 0xFE (or a
 * 0xD1 write of the output port with bit 0 clear) pulses the CPU's RESET, which is how Linux's
 * `reboot` (reboot=k, and the fallback of every other reboot method) restarts a PC. The VMM turns
 * that into the end of the VM.
 *
 * Ports as offsets in a window at 0x60: 0 = data (0x60), 4 = status/command (0x64). The state lives in
 * a shared Int32Array, as the UART's, because any vCPU thread may take the exit.
 */

/** Status register bits (port 0x64 read). */
const STATUS_OBF = 0x01; // output buffer full
const STATUS_SYS = 0x04; // system flag: set once the self-test passed
const STATUS_CMD = 0x08; // last write was to the command port
const STATUS_AUX_OBF = 0x20; // output buffer holds AUX data

/** Command byte bits. */
const CB_KBD_INT = 0x01;
const CB_SYS = 0x04;
const CB_KBD_DISABLE = 0x10;
const CB_AUX_DISABLE = 0x20;
const CB_XLATE = 0x40;

/** Controller commands (port 0x64 write). */
export const I8042Command = {
  READ_CMD_BYTE: 0x20,
  WRITE_CMD_BYTE: 0x60,
  AUX_DISABLE: 0xa7,
  AUX_ENABLE: 0xa8,
  AUX_TEST: 0xa9,
  SELF_TEST: 0xaa,
  KBD_TEST: 0xab,
  KBD_DISABLE: 0xad,
  KBD_ENABLE: 0xae,
  READ_OUTPUT_PORT: 0xd0,
  WRITE_OUTPUT_PORT: 0xd1,
  WRITE_KBD_OUTPUT: 0xd2,
  WRITE_AUX_OUTPUT: 0xd3,
  WRITE_AUX: 0xd4,
  PULSE_RESET: 0xfe,
} as const;

/** Keyboard replies. */
const KBD_ACK = 0xfa;
const KBD_SELF_TEST_OK = 0xaa;
const KBD_RESET = 0xff;
const KBD_GET_ID = 0xf2;
const KBD_ID = [0xab, 0x83];
const KBD_ECHO = 0xee;
const SELF_TEST_OK = 0x55;
/** AUX_TEST answer 0x01, "clock line stuck low": Linux then decides there is no AUX port. */
const AUX_TEST_NO_PORT = 0x01;
/** Output port: bit 0 = CPU reset line (active low), bit 1 = A20 gate. */
const OUTPUT_PORT_RESET_N = 0x01;
const OUTPUT_PORT_A20 = 0x02;

const S = {
  LOCK: 0,
  STATUS: 1,
  CMD_BYTE: 2,
  /** A command waiting for its data byte on port 0x60 (0 = none). */
  PENDING: 3,
  OUTPUT_PORT: 4,
  IRQ_LEVEL: 5,
  Q_HEAD: 6,
  Q_COUNT: 7,
  Q_DATA: 8,
} as const;
const QUEUE_CAPACITY = 16;
export const I8042_STATE_WORDS = S.Q_DATA + QUEUE_CAPACITY;

export function createI8042State(): Int32Array {
  const s = new Int32Array(new SharedArrayBuffer(I8042_STATE_WORDS * 4));
  s[S.STATUS] = STATUS_SYS;
  s[S.CMD_BYTE] = CB_KBD_INT | CB_SYS | CB_XLATE;
  s[S.OUTPUT_PORT] = OUTPUT_PORT_RESET_N | OUTPUT_PORT_A20;
  return s;
}

/** The named, versioned state of the controller (pending output bytes included). */
export interface I8042State {
  version: 1;
  status: number;
  commandByte: number;
  pendingCommand: number;
  outputPort: number;
  output: number[];
}

export class I8042 implements BusDevice {
  constructor(
    private readonly s: Int32Array,
    /** IRQ 1: keyboard data ready. */
    private readonly irq: IrqLine,
    /** The CPU reset line was pulsed. */
    private readonly onReset: () => void,
  ) {
    if (s.length < I8042_STATE_WORDS) throw new RangeError('I8042: state array too small');
  }

  read(offset: number, _size: number): number {
    return withSharedLock(this.s, S.LOCK, () => {
      if (offset === 4) return this.s[S.STATUS]!;
      if (offset !== 0) return 0xff;
      const byte = this.pop();
      // Reading deasserts the line; more queued bytes raise it again, a fresh edge for each (as QEMU's
      // ps2_read_data), since ISA interrupts are edge-triggered.
      if (this.s[S.IRQ_LEVEL] === 1) {
        this.s[S.IRQ_LEVEL] = 0;
        this.irq.setLevel(false);
      }
      this.updateIrq();
      return byte;
    });
  }

  write(offset: number, _size: number, value: number): void {
    let reset = false;
    withSharedLock(this.s, S.LOCK, () => {
      if (offset === 4) reset = this.command(value & 0xff);
      else if (offset === 0) reset = this.data(value & 0xff);
      this.updateIrq();
    });
    // Outside the lock: the hook stops the VM.
    if (reset) this.onReset();
  }

  state(): I8042State {
    return withSharedLock(this.s, S.LOCK, () => {
      const s = this.s;
      const output: number[] = [];
      for (let i = 0; i < s[S.Q_COUNT]!; i++) output.push(s[S.Q_DATA + ((s[S.Q_HEAD]! + i) % QUEUE_CAPACITY)]!);
      return { version: 1, status: s[S.STATUS]!, commandByte: s[S.CMD_BYTE]!, pendingCommand: s[S.PENDING]!, outputPort: s[S.OUTPUT_PORT]!, output };
    });
  }

  restore(state: I8042State): void {
    if (state.version !== 1) throw new Error(`i8042 state version ${state.version} is not supported (this tsvmm reads version 1)`);
    withSharedLock(this.s, S.LOCK, () => {
      const s = this.s;
      s[S.STATUS] = state.status; s[S.CMD_BYTE] = state.commandByte; s[S.PENDING] = state.pendingCommand;
      s[S.OUTPUT_PORT] = state.outputPort;
      s[S.Q_HEAD] = 0;
      s[S.Q_COUNT] = 0;
      for (const b of state.output.slice(0, QUEUE_CAPACITY)) this.push(b, (state.status & STATUS_AUX_OBF) !== 0);
      // The line level lives in the irqchip state, restored with it; recompute ours to match.
      s[S.IRQ_LEVEL] = this.wantIrq() ? 1 : 0;
    });
  }

  /** A controller command; returns true if it pulses the reset line. */
  private command(cmd: number): boolean {
    const s = this.s;
    s[S.STATUS] = s[S.STATUS]! | STATUS_CMD;
    switch (cmd) {
      case I8042Command.READ_CMD_BYTE: this.push(s[S.CMD_BYTE]!); return false;
      case I8042Command.WRITE_CMD_BYTE:
      case I8042Command.WRITE_OUTPUT_PORT:
      case I8042Command.WRITE_KBD_OUTPUT:
      case I8042Command.WRITE_AUX_OUTPUT:
      case I8042Command.WRITE_AUX:
        s[S.PENDING] = cmd;
        return false;
      case I8042Command.AUX_DISABLE: s[S.CMD_BYTE] = s[S.CMD_BYTE]! | CB_AUX_DISABLE; return false;
      case I8042Command.AUX_ENABLE: s[S.CMD_BYTE] = s[S.CMD_BYTE]! & ~CB_AUX_DISABLE; return false;
      case I8042Command.AUX_TEST: this.push(AUX_TEST_NO_PORT); return false;
      case I8042Command.SELF_TEST: s[S.STATUS] = s[S.STATUS]! | STATUS_SYS; this.push(SELF_TEST_OK); return false;
      case I8042Command.KBD_TEST: this.push(0x00); return false;
      case I8042Command.KBD_DISABLE: s[S.CMD_BYTE] = s[S.CMD_BYTE]! | CB_KBD_DISABLE; return false;
      case I8042Command.KBD_ENABLE: s[S.CMD_BYTE] = s[S.CMD_BYTE]! & ~CB_KBD_DISABLE; return false;
      case I8042Command.READ_OUTPUT_PORT: this.push(s[S.OUTPUT_PORT]!); return false;
      default:
        // 0xF0-0xFF pulse output port lines for a moment; a clear bit 0 in the mask pulses RESET.
        return cmd >= 0xf0 && (cmd & OUTPUT_PORT_RESET_N) === 0;
    }
  }

  /** A data byte: the pending command's argument, or a byte for the keyboard. Returns true on reset. */
  private data(value: number): boolean {
    const s = this.s;
    s[S.STATUS] = s[S.STATUS]! & ~STATUS_CMD;
    const pending = s[S.PENDING]!;
    s[S.PENDING] = 0;
    switch (pending) {
      case I8042Command.WRITE_CMD_BYTE:
        s[S.CMD_BYTE] = value;
        s[S.STATUS] = (s[S.STATUS]! & ~STATUS_SYS) | (value & CB_SYS);
        return false;
      case I8042Command.WRITE_OUTPUT_PORT:
        s[S.OUTPUT_PORT] = value;
        return (value & OUTPUT_PORT_RESET_N) === 0;
      case I8042Command.WRITE_KBD_OUTPUT: this.push(value); return false;
      case I8042Command.WRITE_AUX_OUTPUT: return false; // no AUX port: the loopback byte never comes back
      case I8042Command.WRITE_AUX: return false; // no AUX device to receive it
      default:
        this.keyboard(value);
        return false;
    }
  }

  /** An AT keyboard's answers to the commands Linux's atkbd sends. */
  private keyboard(cmd: number): void {
    if (cmd === KBD_ECHO) this.push(KBD_ECHO);
    else if (cmd === KBD_RESET) { this.push(KBD_ACK); this.push(KBD_SELF_TEST_OK); }
    else if (cmd === KBD_GET_ID) { this.push(KBD_ACK); for (const b of KBD_ID) this.push(b); }
    else this.push(KBD_ACK); // set LEDs, rate, scan set, enable, disable, and their arguments
  }

  private wantIrq(): boolean {
    const s = this.s;
    return (s[S.STATUS]! & STATUS_OBF) !== 0 && (s[S.STATUS]! & STATUS_AUX_OBF) === 0 && (s[S.CMD_BYTE]! & CB_KBD_INT) !== 0;
  }

  private updateIrq(): void {
    const level = this.wantIrq() ? 1 : 0;
    if (level !== this.s[S.IRQ_LEVEL]) {
      this.s[S.IRQ_LEVEL] = level;
      this.irq.setLevel(level === 1);
    }
  }

  private push(byte: number, aux = false): void {
    const s = this.s;
    const count = s[S.Q_COUNT]!;
    if (count >= QUEUE_CAPACITY) return; // a real controller holds one byte; the guest reads as it goes
    s[S.Q_DATA + ((s[S.Q_HEAD]! + count) % QUEUE_CAPACITY)] = byte & 0xff;
    s[S.Q_COUNT] = count + 1;
    s[S.STATUS] = (s[S.STATUS]! | STATUS_OBF) & ~STATUS_AUX_OBF | (aux ? STATUS_AUX_OBF : 0);
  }

  private pop(): number {
    const s = this.s;
    const count = s[S.Q_COUNT]!;
    if (count === 0) return 0;
    const head = s[S.Q_HEAD]!;
    const byte = s[S.Q_DATA + head]!;
    s[S.Q_HEAD] = (head + 1) % QUEUE_CAPACITY;
    s[S.Q_COUNT] = count - 1;
    if (count === 1) s[S.STATUS] = s[S.STATUS]! & ~(STATUS_OBF | STATUS_AUX_OBF);
    return byte;
  }
}
