/**
 * TSVMM_TRACE_PHASES only: counts one vCPU's port-I/O and MMIO exits by port (MMIO by 4 KiB page) and
 * prints the counts, with the thread's total from the control block (halts and interrupt exits
 * included), at the guest's first console byte and at the first lines of console output. Shows what
 * the guest made us do before, say, Linux's banner.
 */
import type { IoBus } from '../devices/io-bus.js';
import { tracePhase } from '../machine/phase-trace.js';
import { Ctl } from './control-block.js';
import type { ExitBuses } from './exit-handler.js';

/** Console lines reported with their exit counts (Linux prints its banner on the first few). */
const LINES_REPORTED = 3;

export class ExitCensus {
  private readonly counts = new Map<string, number>();
  private bytes = 0;
  private lines = 0;

  constructor(private readonly ctl: Int32Array) {}

  /** Counts every access the buses see from now on. */
  attach(buses: ExitBuses): void {
    this.count(buses.pio, 'pio', (port) => `0x${port.toString(16)}`);
    this.count(buses.mmio, 'mmio', (address) => `0x${(address - (address % 4096)).toString(16)}`);
  }

  /** The console's transmit callback, reporting at the first byte and the first lines. */
  wrapTransmit(transmit: (byte: number) => void): (byte: number) => void {
    return (byte) => {
      if (this.bytes++ === 0) this.report('first console byte');
      transmit(byte);
      if (byte === 0x0a && this.lines < LINES_REPORTED) this.report(`console line ${++this.lines}`);
    };
  }

  private count(bus: IoBus, kind: string, key: (address: number) => string): void {
    const read = bus.read.bind(bus);
    const write = bus.write.bind(bus);
    bus.read = (address, size) => { this.bump(`${kind} in ${key(address)}`); return read(address, size); };
    bus.write = (address, size, value) => { this.bump(`${kind} out ${key(address)}`); write(address, size, value); };
  }

  private bump(key: string): void {
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
  }

  private report(when: string): void {
    const byCount = [...this.counts].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k}: ${n}`).join(', ');
    tracePhase(`${when}: ${(Atomics.load(this.ctl, Ctl.EXITS) >>> 0) + 1} exits (${byCount})`);
  }
}
