/**
 * How fast a pre-copy migration's passes send, as PrecopySender measures it: the running figures of
 * the pass under way (query-migrate's mbps and pages-per-second, and max-bandwidth's pacing), and the
 * figure of the last whole pass that could measure the link, which the switch-over decision uses
 * (expected downtime = bytes left / it). Times are passed in (ms, performance.now()'s clock), so the
 * arithmetic is tested without waiting.
 */
import { PAGE_BYTES } from './protocol.js';
import { BATCH_PAGES } from './ram-record.js';

/** The least a pass must send for its time to measure the link (endPass): one full RAM record. */
export const MIN_MEASURED_PASS_BYTES = BATCH_PAGES * PAGE_BYTES;

export class PassMeter {
  /** When, at what bytes sent and after how many pages the current pass began sending. */
  private start = { ms: 0, bytes: 0, pages: 0 };
  /** Bytes/s so far in the current pass. */
  private running = 0;
  private runningPages = 0;
  /** Bytes/s of the last pass that measured the link, whole; 0 before any. */
  private whole = 0;

  /** A pass begins sending, `bytes` and `pages` having been sent before it in the migration. */
  startPass(nowMs: number, bytes: number, pages: number): void {
    this.start = { ms: nowMs, bytes, pages };
  }

  /**
   * After a batch, with `bytes` and `pages` sent so far in the migration: updates the running
   * figures, and returns the pass's seconds (at least 1 ms) and bytes so far, for pacing.
   */
  afterBatch(nowMs: number, bytes: number, pages: number): { seconds: number; bytes: number } {
    const seconds = Math.max(1, nowMs - this.start.ms) / 1000;
    const sent = bytes - this.start.bytes;
    this.running = sent / seconds;
    this.runningPages = (pages - this.start.pages) / seconds;
    return { seconds, bytes: sent };
  }

  /**
   * The pass has ended, `bytes` sent so far in the migration, every channel's included. Its figure,
   * whole, replaces the last, unless it sent less than MIN_MEASURED_PASS_BYTES: so little measures
   * fixed costs (a sync round trip per channel, record headers, zero pages sent as flags), not the
   * link, and it counts only when there is no figure yet. (The running figure falls short with
   * multifd, where a batch is only queued when it returns: after a pass of a batch or two it read
   * ~0 B/s, so no later pass fitted the downtime limit and auto-converge throttled the guest pass
   * after pass, 35 syncs where one channel needs 6, on kvm_pvm.)
   */
  endPass(nowMs: number, bytes: number): void {
    const sent = bytes - this.start.bytes;
    if (sent >= MIN_MEASURED_PASS_BYTES || (this.whole === 0 && sent > 0)) {
      this.whole = sent / (Math.max(0.1, nowMs - this.start.ms) / 1000);
    }
  }

  /** Bytes/s the link carries: the last measured whole pass, or before any the current pass so far. */
  get bytesPerSecond(): number {
    return this.whole > 0 ? this.whole : this.running;
  }

  /** Pages/s the current pass has sent so far, zero pages included (query-migrate's pages-per-second, as QEMU's). */
  get pagesPerSecond(): number {
    return this.runningPages;
  }
}
