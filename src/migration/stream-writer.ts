/**
 * The source's side of the main connection: every byte it writes goes into the END checksum and the
 * byte count, in the order written, and is written with backpressure; or, during the switch-over,
 * held and written in a few large writes (hold mode).
 */
import type { Socket } from 'node:net';
import { endRecord } from './protocol.js';
import { StreamChecksum } from './stream-checksum.js';

/** The most bytes of consecutive held records flushHeld joins into one write; a larger record goes alone. */
const JOIN_MAX_BYTES = 64 * 1024;

/** In hold mode, what is held is written once this much has gathered (and at flushHeld). */
const HELD_MAX_BYTES = 4 * 1024 * 1024;

export class StreamWriter {
  private readonly checksum = new StreamChecksum();
  private sent = 0;
  /**
   * In hold mode (the switch-over): records accounted but not yet written. They go out once
   * HELD_MAX_BYTES have gathered or at flushHeld (small ones joined into one write, a large one alone),
   * rather than with a write (a system call, which over loopback also runs the receiver's TCP input on
   * this thread) and an event-loop turn per record: each cost milliseconds of downtime in nested KVM.
   */
  private held: { buf: Buffer; written?: () => void }[] | undefined;
  private heldCount = 0;

  constructor(
    private readonly socket: Socket,
    private readonly hooks: {
      /** Throws if the migration must stop (cancel, a failed connection, the peer's refusal); called before each record. */
      readonly check: () => void;
      /** Resolves at the socket's next 'drain' (or another event the caller wakes on). */
      readonly wait: () => Promise<void>;
    },
  ) {}

  /** Bytes written (or held) so far: what the next END counts. */
  get bytesSent(): number {
    return this.sent;
  }

  /** Bytes held and not yet written (hold mode). */
  get heldBytes(): number {
    return this.heldCount;
  }

  /** The END record for everything written so far: not accounted, so the state stays as it was. */
  endRecord(): Buffer {
    return endRecord(this.sent, this.checksum.value);
  }

  /**
   * Writes `buf` with backpressure (holds it, in hold mode); every byte goes into the END checksum.
   * `written` runs once the socket no longer needs `buf` (its bytes are in the kernel, or it failed).
   */
  async send(buf: Buffer, written?: () => void): Promise<void> {
    this.account(buf);
    if (this.held !== undefined) {
      this.hold(buf, written);
      if (this.heldCount >= HELD_MAX_BYTES) await this.flushHeld();
      return;
    }
    if (!this.socket.write(buf, written)) await this.drained();
  }

  /** From now on records are held (send), until flushHeld writes them and stopHolding ends hold mode. */
  startHolding(): void {
    this.held ??= [];
  }

  /**
   * Accounts and holds each of `records`, then an END over everything before it, with nothing awaited
   * between them: the tail of a switch-over, written by the next flushHeld. Hold mode only.
   */
  holdWithEnd(records: readonly Buffer[]): void {
    for (const r of records) {
      this.account(r);
      this.hold(r);
    }
    const end = this.endRecord();
    this.account(end);
    this.hold(end);
  }

  /**
   * Writes what is held, in order, through the same write path as every record before (cork() and a
   * writev would run Node code for the first time, in the downtime): consecutive small records joined
   * into one write (each write costs the stopped guest ~20-30 µs on kvm_pvm), a large one as it is,
   * from its record buffer. Waits while the socket pushes back.
   * Large records used to be joined too, copied into a buffer allocated for it: fresh memory, which
   * on a host that hands freed memory back to its hypervisor costs a fault per page to write
   * (0.5-2 s per GiB on kvm_pvm), in the guest's downtime. A dirtying guest's last 2.5-3.5 MiB of
   * pages took 3.4-5.9 ms from their sync to the device state's capture. With the destination's read
   * buffer written through beforehand too (transport.ts, bulkReads), alternated dirtying migrations
   * (64 MiB rewritten, 8 a side): downtime medians 8 against 17 ms at 4 GiB, 7.5 against 14 at 1 GiB.
   */
  async flushHeld(): Promise<void> {
    const held = this.held ?? [];
    if (this.held !== undefined) this.held = [];
    this.heldCount = 0;
    let run: typeof held = [];
    let runBytes = 0;
    const writeRun = () => {
      if (run.length === 1) {
        this.socket.write(run[0]!.buf, run[0]!.written);
      } else if (run.length > 1) {
        this.socket.write(Buffer.concat(run.map((h) => h.buf), runBytes));
        for (const h of run) h.written?.(); // the copy is what goes; the record buffers are free again
      }
      run = [];
      runBytes = 0;
    };
    for (const h of held) {
      if (runBytes + h.buf.length > JOIN_MAX_BYTES) writeRun();
      run.push(h);
      runBytes += h.buf.length;
    }
    writeRun();
    await this.drained();
  }

  /** Ends hold mode. Anything still held is dropped (a failed migration's). */
  stopHolding(): void {
    this.held = undefined;
    this.heldCount = 0;
  }

  /** Counts `buf` as sent: into the END checksum and the byte count. Write or hold it next, in this order. */
  private account(buf: Buffer): void {
    this.hooks.check();
    this.checksum.update(buf);
    this.sent += buf.length;
  }

  private hold(buf: Buffer, written?: () => void): void {
    this.held!.push({ buf, written });
    this.heldCount += buf.length;
  }

  private async drained(): Promise<void> {
    while (this.socket.writableNeedDrain) {
      await this.hooks.wait();
      this.hooks.check();
    }
  }
}
