import type { BusDevice, IrqLine } from './bus-device.js';
import { withSharedLock } from './shared-lock.js';

/**
 * An 8250/16550A UART (COM1), register-compatible with QEMU's hw/char/serial.c so guest drivers that
 * work there work here: transmit is instantaneous, the receive FIFO is deep (it stands in for the
 * character backend's buffer), interrupts follow IER/LSR, and loopback mode reflects MCR into MSR the
 * way Linux's 8250 autoconfig probe expects.
 *
 * The register file lives in a caller-provided Int32Array (over a SharedArrayBuffer) and every access
 * takes the spinlock in word 0, because the UART is touched from two threads: the vCPU thread that
 * takes the guest's port exits, and the main thread that feeds received bytes from stdin. The state
 * words are named below; `state()` returns them by name.
 */

/** Register offsets within the eight-port window (datasheet names). */
export const UartReg = {
  RBR_THR_DLL: 0,
  IER_DLM: 1,
  IIR_FCR: 2,
  LCR: 3,
  MCR: 4,
  LSR: 5,
  MSR: 6,
  SCR: 7,
} as const;

const IER_ERBFI = 0x01; // received data available
const IER_ETBEI = 0x02; // transmitter holding register empty
const IER_ELSI = 0x04; // receiver line status
const IER_EDSSI = 0x08; // modem status

const IIR_NO_INT = 0x01;
const IIR_RLS = 0x06;
const IIR_RDA = 0x04;
const IIR_THRE = 0x02;
const IIR_MSI = 0x00;
const IIR_FIFO_ENABLED = 0xc0;

const FCR_FIFO_ENABLE = 0x01;
const FCR_CLEAR_RX = 0x02;

const LCR_DLAB = 0x80;

const MCR_DTR = 0x01;
const MCR_RTS = 0x02;
const MCR_OUT1 = 0x04;
const MCR_OUT2 = 0x08;
const MCR_LOOP = 0x10;

const LSR_DR = 0x01;
const LSR_OE = 0x02;
const LSR_THRE = 0x20;
const LSR_TEMT = 0x40;
const LSR_ERRORS = 0x1e;

const MSR_DCTS = 0x01;
const MSR_DDSR = 0x02;
const MSR_TERI = 0x04;
const MSR_DDCD = 0x08;
const MSR_DELTAS = MSR_DCTS | MSR_DDSR | MSR_TERI | MSR_DDCD;
const MSR_CTS = 0x10;
const MSR_DSR = 0x20;
const MSR_RI = 0x40;
const MSR_DCD = 0x80;

/** Indices of the state words. */
const S = {
  LOCK: 0,
  IER: 1,
  LCR: 2,
  MCR: 3,
  LSR: 4,
  MSR: 5,
  SCR: 6,
  DLL: 7,
  DLM: 8,
  FCR: 9,
  /** THRE interrupt pending (cleared by reading IIR while it is the cause, or by writing THR). */
  THR_IPENDING: 10,
  /** The level last driven on the IRQ line, so the line is only touched on change. */
  IRQ_LEVEL: 11,
  RX_HEAD: 12,
  RX_COUNT: 13,
  RX_DATA: 16,
} as const;

/** Bytes the receive buffer holds; beyond that, input is dropped and LSR.OE set, as on overrun. */
export const UART_RX_CAPACITY = 4096;
/** Int32 words of state a UART needs. */
export const UART_STATE_WORDS = S.RX_DATA + UART_RX_CAPACITY;

export function createUartState(): Int32Array {
  const state = new Int32Array(new SharedArrayBuffer(UART_STATE_WORDS * 4));
  state[S.LSR] = LSR_THRE | LSR_TEMT;
  state[S.MSR] = MSR_DCD | MSR_DSR | MSR_CTS;
  state[S.DLL] = 0x0c; // 9600 baud, the power-on divisor
  return state;
}

/** The named, versioned state of a UART (receive buffer included). */
export interface UartState {
  version: 1;
  ier: number; lcr: number; mcr: number; lsr: number; msr: number; scr: number;
  dll: number; dlm: number; fcr: number; thrInterruptPending: boolean; rx: number[];
}

export class Uart8250 implements BusDevice {
  constructor(
    private readonly s: Int32Array,
    private readonly irq: IrqLine,
    /** Where transmitted bytes go (the console backend). */
    private readonly transmit: (byte: number) => void,
  ) {
    if (s.length < UART_STATE_WORDS) throw new RangeError('Uart8250: state array too small');
  }

  read(offset: number, _size: number): number {
    return withSharedLock(this.s, S.LOCK, () => {
      return this.readLocked(offset);
    });
  }

  write(offset: number, _size: number, value: number): void {
    withSharedLock(this.s, S.LOCK, () => {
      this.writeLocked(offset, value & 0xff);
    });
  }

  /** Accepts bytes from the backend (stdin); returns how many fitted. */
  receive(bytes: Uint8Array): number {
    return withSharedLock(this.s, S.LOCK, () => {
      if (this.s[S.MCR]! & MCR_LOOP) return bytes.length; // the line is disconnected in loopback
      let accepted = 0;
      for (const b of bytes) {
        if (!this.pushRx(b)) break;
        accepted++;
      }
      this.updateIrq();
      return accepted;
    });
  }

  state(): UartState {
    return withSharedLock(this.s, S.LOCK, () => {
      const s = this.s;
      const rx: number[] = [];
      for (let i = 0; i < s[S.RX_COUNT]!; i++) rx.push(s[S.RX_DATA + ((s[S.RX_HEAD]! + i) % UART_RX_CAPACITY)]!);
      return {
        version: 1, ier: s[S.IER]!, lcr: s[S.LCR]!, mcr: s[S.MCR]!, lsr: s[S.LSR]!, msr: s[S.MSR]!,
        scr: s[S.SCR]!, dll: s[S.DLL]!, dlm: s[S.DLM]!, fcr: s[S.FCR]!, thrInterruptPending: s[S.THR_IPENDING] === 1, rx,
      };
    });
  }

  /** Loads a saved state (the receive buffer included), as on a migration's destination. */
  restore(state: UartState): void {
    if (state.version !== 1) throw new Error(`UART state version ${state.version} is not supported (this tsvmm reads version 1)`);
    return withSharedLock(this.s, S.LOCK, () => {
      const s = this.s;
      s[S.IER] = state.ier; s[S.LCR] = state.lcr; s[S.MCR] = state.mcr; s[S.LSR] = state.lsr; s[S.MSR] = state.msr;
      s[S.SCR] = state.scr; s[S.DLL] = state.dll; s[S.DLM] = state.dlm; s[S.FCR] = state.fcr;
      s[S.THR_IPENDING] = state.thrInterruptPending ? 1 : 0;
      s[S.RX_HEAD] = 0;
      s[S.RX_COUNT] = 0;
      for (const b of state.rx.slice(0, UART_RX_CAPACITY)) this.pushRx(b);
      // The line level lives in the irqchip state, restored with it; recompute ours to match.
      s[S.IRQ_LEVEL] = this.pendingIir() !== IIR_NO_INT ? 1 : 0;
    });
  }

  private readLocked(offset: number): number {
    const s = this.s;
    switch (offset) {
      case UartReg.RBR_THR_DLL: {
        if (s[S.LCR]! & LCR_DLAB) return s[S.DLL]!;
        const byte = this.popRx();
        this.updateIrq();
        return byte;
      }
      case UartReg.IER_DLM:
        return s[S.LCR]! & LCR_DLAB ? s[S.DLM]! : s[S.IER]!;
      case UartReg.IIR_FCR: {
        const iir = this.pendingIir();
        if (iir === IIR_THRE) {
          s[S.THR_IPENDING] = 0;
          this.updateIrq();
        }
        return iir | (s[S.FCR]! & FCR_FIFO_ENABLE ? IIR_FIFO_ENABLED : 0);
      }
      case UartReg.LCR:
        return s[S.LCR]!;
      case UartReg.MCR:
        return s[S.MCR]!;
      case UartReg.LSR: {
        const lsr = s[S.LSR]!;
        s[S.LSR] = lsr & ~(LSR_OE | LSR_ERRORS); // error bits clear on read
        if (lsr & (LSR_OE | LSR_ERRORS)) this.updateIrq();
        return lsr;
      }
      case UartReg.MSR: {
        const msr = this.modemStatus();
        s[S.MSR] = s[S.MSR]! & ~MSR_DELTAS;
        this.updateIrq();
        return msr;
      }
      case UartReg.SCR:
        return s[S.SCR]!;
      default:
        return 0xff;
    }
  }

  private writeLocked(offset: number, value: number): void {
    const s = this.s;
    switch (offset) {
      case UartReg.RBR_THR_DLL:
        if (s[S.LCR]! & LCR_DLAB) {
          s[S.DLL] = value;
          return;
        }
        if (s[S.MCR]! & MCR_LOOP) this.pushRx(value);
        else this.transmit(value);
        // Transmission is instantaneous: the holding register is empty again at once.
        s[S.LSR] = s[S.LSR]! | LSR_THRE | LSR_TEMT;
        s[S.THR_IPENDING] = 1;
        this.updateIrq();
        return;
      case UartReg.IER_DLM:
        if (s[S.LCR]! & LCR_DLAB) {
          s[S.DLM] = value;
          return;
        }
        {
          const enablingThre = (value & IER_ETBEI) !== 0 && (s[S.IER]! & IER_ETBEI) === 0;
          s[S.IER] = value & 0x0f;
          // An 8250 raises THRE at once when the interrupt is enabled with the register empty.
          if (enablingThre && s[S.LSR]! & LSR_THRE) s[S.THR_IPENDING] = 1;
        }
        this.updateIrq();
        return;
      case UartReg.IIR_FCR:
        if (value & FCR_CLEAR_RX) {
          s[S.RX_HEAD] = 0;
          s[S.RX_COUNT] = 0;
          s[S.LSR] = s[S.LSR]! & ~LSR_DR;
        }
        s[S.FCR] = value & 0xc9;
        this.updateIrq();
        return;
      case UartReg.LCR:
        s[S.LCR] = value;
        return;
      case UartReg.MCR: {
        const before = this.modemStatus();
        s[S.MCR] = value & 0x1f;
        const after = this.modemStatus();
        // Loopback changes drive the modem-status delta bits the way the lines would.
        let deltas = 0;
        if ((before ^ after) & MSR_CTS) deltas |= MSR_DCTS;
        if ((before ^ after) & MSR_DSR) deltas |= MSR_DDSR;
        if ((before ^ after) & MSR_DCD) deltas |= MSR_DDCD;
        if (before & MSR_RI && !(after & MSR_RI)) deltas |= MSR_TERI;
        s[S.MSR] = s[S.MSR]! | deltas;
        this.updateIrq();
        return;
      }
      case UartReg.SCR:
        s[S.SCR] = value;
        return;
      default:
        return; // LSR and MSR are read-only
    }
  }

  /** MSR as the guest reads it: in loopback, the outputs DTR/RTS/OUT1/OUT2 appear as DSR/CTS/RI/DCD. */
  private modemStatus(): number {
    const s = this.s;
    const mcr = s[S.MCR]!;
    const deltas = s[S.MSR]! & MSR_DELTAS;
    if (!(mcr & MCR_LOOP)) return deltas | MSR_DCD | MSR_DSR | MSR_CTS;
    return (
      deltas |
      (mcr & MCR_DTR ? MSR_DSR : 0) |
      (mcr & MCR_RTS ? MSR_CTS : 0) |
      (mcr & MCR_OUT1 ? MSR_RI : 0) |
      (mcr & MCR_OUT2 ? MSR_DCD : 0)
    );
  }

  /** The highest-priority pending interrupt identification, by the 16550's fixed priorities. */
  private pendingIir(): number {
    const s = this.s;
    const ier = s[S.IER]!;
    const lsr = s[S.LSR]!;
    if (ier & IER_ELSI && lsr & (LSR_OE | LSR_ERRORS)) return IIR_RLS;
    if (ier & IER_ERBFI && lsr & LSR_DR) return IIR_RDA;
    if (ier & IER_ETBEI && s[S.THR_IPENDING]) return IIR_THRE;
    if (ier & IER_EDSSI && s[S.MSR]! & MSR_DELTAS) return IIR_MSI;
    return IIR_NO_INT;
  }

  private updateIrq(): void {
    const level = this.pendingIir() !== IIR_NO_INT ? 1 : 0;
    if (level !== this.s[S.IRQ_LEVEL]) {
      this.s[S.IRQ_LEVEL] = level;
      this.irq.setLevel(level === 1);
    }
  }

  private pushRx(byte: number): boolean {
    const s = this.s;
    const count = s[S.RX_COUNT]!;
    if (count >= UART_RX_CAPACITY) {
      s[S.LSR] = s[S.LSR]! | LSR_OE;
      return false;
    }
    s[S.RX_DATA + ((s[S.RX_HEAD]! + count) % UART_RX_CAPACITY)] = byte;
    s[S.RX_COUNT] = count + 1;
    s[S.LSR] = s[S.LSR]! | LSR_DR;
    return true;
  }

  private popRx(): number {
    const s = this.s;
    const count = s[S.RX_COUNT]!;
    if (count === 0) return 0;
    const head = s[S.RX_HEAD]!;
    const byte = s[S.RX_DATA + head]!;
    s[S.RX_HEAD] = (head + 1) % UART_RX_CAPACITY;
    s[S.RX_COUNT] = count - 1;
    if (count === 1) s[S.LSR] = s[S.LSR]! & ~LSR_DR;
    return byte;
  }

}
