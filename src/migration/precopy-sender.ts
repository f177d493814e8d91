import { TRACE_PHASES, tracePhase } from '../machine/phase-trace.js';
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import type { GuestMemory } from '../memory/guest-memory.js';
import { addon } from '../kvm/addon.js';
import { BATCH_PAGES, RecordBufferPool, encodeRamRecord } from './ram-record.js';
import type { PageRange } from '../memory/dirty-bitmap.js';
import { StreamWriter } from './stream-writer.js';
import { SESSION_BYTES, multifdRecord } from './multifd.js';
import { COMMIT_GIVE_WAY_MS, SWITCHOVER_SPIN_MS, connectionErrorText, giveWay, readAvailable, spinUntilReadable } from './transport.js';
import type { MultifdChannels } from './multifd-channels.js';
import type { DirtyTracker, RegionDirtyPages } from '../memory/dirty-tracker.js';
import type { MigrationInfo, MigrationParameters, MigrationStatusName } from '../control/vm-control.js';
import {
  PAGE_BYTES, RecordType, headerRecord, record, switchoverRecord, recordName, u32Record, type MachineShape,
} from './protocol.js';
import { DestinationAnswers } from './destination-answers.js';
import { PassMeter } from './pass-meter.js';
import { SwitchoverState, type StateSource } from './switchover-state.js';
import { hashGuestMemory } from './ram-verify.js';
import { ConvergencePolicy } from './convergence.js';

/** What the sender needs of a VM: with StateSource's, the state outside RAM. */
export interface MigrationSource extends StateSource {
  readonly memory: GuestMemory;
  readonly dirty: DirtyTracker;
  /** With captureState, the vCPU threads read their state at the pause, for captureState() (Vm.pause). */
  pause(options?: { readonly captureState?: boolean }): Promise<void>;
  resume(): void;
  /** Auto-converge: the vCPUs sleep `percent` (0 to 99) of their time, 0 ending it. */
  throttle(percent: number): void;
  shape(): MachineShape;
}

export class MigrationFailed extends Error {
  override name = 'MigrationFailed';
}

/**
 * Before the pause, how long the source waits (its guest running) for the destination to have applied
 * every pass sent (APPLIED, protocol.ts), each time the policy asks for it (ConvergencePolicy's
 * catch-up, at most MAX_CATCH_UPS times in a migration). Loopback TCP buffers ~20 MB between the two,
 * and a destination writing fresh memory on a host that is itself a VM applied it slower than the
 * source sent: 1 GiB full-RAM migrations on kvm_pvm had the guest stopped 31-32 ms in 2 of 5 rounds
 * (bench/migrate --phases: the destination read the tail 30 ms after the source sent it), against
 * ~1 ms otherwise. Past the limit the source switches over anyway.
 */
const CATCH_UP_MAX_MS = 2000;

/**
 * The switch-over's last pages are written before the device state is captured once they are this
 * many bytes (64 pages): the destination applies them meanwhile. Fewer wait for the tail's write, as
 * one more write costs the stopped guest about as much as applying them (~0.05-0.1 ms on kvm_pvm).
 */
const EARLY_FLUSH_BYTES = 64 * PAGE_BYTES;
/** Room for the destination's answer to END read at once (LOADED; a REFUSED's reason, or its rest, comes through the event loop). */
const ANSWER_READ_BYTES = 4096;

/**
 * Pre-copy migration of a running VM over one connection: pass 1 sends every page, each later pass
 * the pages a dirty-log sync reports; when the remaining dirty bytes fit in the downtime limit at the
 * measured bandwidth and no longer shrink well from pass to pass (ConvergencePolicy decides), the
 * vCPUs stop, the last pages and the state go, and the destination's LOADED, answered with COMMIT,
 * completes it. Explicit states: setup -> active -> device -> completed, or failed / cancelled, after
 * which the source's guest runs again exactly as before.
 */
export class PrecopySender {
  private state: MigrationStatusName = 'setup';
  /** The main connection's writes: every byte into the END checksum, held in the switch-over. */
  private readonly writer: StreamWriter;
  /** When the migration began (Date.now()): what total-time counts from. */
  private readonly startMs: number;
  private endMs: number | undefined;
  private downtimeMs: number | undefined;
  private pass = 0;
  /**
   * Dirty-log syncs so far, the start of logging counted as the first (query-migrate's
   * dirty-sync-count, as QEMU's counts the bitmap sync of its setup): during pass n it reads n.
   */
  private syncs = 0;
  private zeroPages = 0;
  private dataPages = 0;
  /** Bytes of pages still to send: all of RAM as pass 1 starts, each sync's dirty pages after; less each batch sent (QEMU's ram.remaining). */
  private remainingBytes = 0;
  /** The passes' rates: query-migrate's mbps and pages-per-second, max-bandwidth's pacing, the expected downtime's bandwidth. */
  private readonly meter = new PassMeter();
  /** How long setup took (connection, handshake, header, channels), in ms: query-migrate's setup-time. */
  private setupMs: number | undefined;
  /** transferred() when the guest was stopped: what went before is precopy-bytes, what went after downtime-bytes. */
  private bytesAtPause: number | undefined;
  /** Pages/s the guest dirtied between the last two syncs (query-migrate's dirty-pages-rate, as QEMU's). */
  private dirtyRate = 0;
  private error: string | undefined;
  private cancelled = false;
  private throttlePercent = 0;
  private paused = false;
  /** The source has answered LOADED with COMMIT: the guest belongs to the destination now. */
  private committed = false;
  private readonly answers = new DestinationAnswers();
  /** The device state's records, encoded warm and from templates in the pause. */
  private readonly deviceState: SwitchoverState;
  private readonly recordBuffers = new RecordBufferPool();
  /** The page list of the batch being encoded (sendAllPages, sendDirty). */
  private readonly batchPages = new Uint32Array(BATCH_PAGES);
  private channels: MultifdChannels | undefined;
  private socketError: Error | undefined;
  private wake: (() => void) | undefined;

  constructor(
    private readonly vm: MigrationSource,
    private readonly socket: Socket,
    /** Read live: migrate-set-parameters during a migration (a higher downtime-limit) takes effect at the next pass. */
    private readonly params: () => MigrationParameters,
    /** Read live, like params: whether the auto-converge capability is on. */
    private readonly autoConverge: () => boolean,
    private readonly onStatus: (status: MigrationStatusName) => void = () => {},
    private readonly extras: {
      /** RAM over this many channel connections (see protocol.ts, multifd), opened with `open`. */
      readonly multifd?: { readonly channels: number; open(session: Uint8Array, announce: () => Promise<void>): Promise<MultifdChannels> };
      /** Tests only: runs with the vCPUs stopped, just before the final sync (a slot change there is the 2015 case). */
      readonly testOnlyBeforeFinalSync?: () => Promise<void>;
      /**
       * When the migrate command was taken (Date.now()), if before this sender: total-time counts from
       * there, connection and TLS handshake included, as QEMU's counts from migrate_init in qmp_migrate.
       */
      readonly startMs?: number;
    } = {},
  ) {
    this.startMs = extras.startMs ?? Date.now();
    this.writer = new StreamWriter(socket, { check: () => this.check(), wait: () => this.nextWake() });
    this.deviceState = new SwitchoverState(vm, () => this.writer.endRecord());
    socket.on('data', (d: Buffer) => { this.answers.push(d); this.poke(); });
    socket.on('error', (e) => { this.socketError = e; this.poke(); });
    socket.on('close', () => { this.socketError ??= new Error('the destination closed the connection'); this.poke(); });
    socket.on('drain', () => this.poke());
  }

  get status(): MigrationStatusName {
    return this.state;
  }

  /** Still under way: not yet completed, failed or cancelled. */
  get inProgress(): boolean {
    return this.state === 'setup' || this.state === 'active' || this.state === 'device';
  }

  info(): MigrationInfo {
    const total = this.vm.memory.sizeBytes;
    const now = this.endMs ?? Date.now();
    const info: MigrationInfo = {
      status: this.state,
      'total-time': now - this.startMs,
      ram: {
        transferred: this.transferred(), remaining: this.remainingBytes, total,
        duplicate: this.zeroPages + (this.channels?.zeroPages ?? 0), normal: this.dataPages + (this.channels?.dataPages ?? 0),
        'normal-bytes': (this.dataPages + (this.channels?.dataPages ?? 0)) * PAGE_BYTES,
        'dirty-pages-rate': Math.round(this.dirtyRate), mbps: (this.linkBandwidth() * 8) / 1e6,
        'dirty-sync-count': this.syncs, 'page-size': PAGE_BYTES, 'pages-per-second': Math.round(this.meter.pagesPerSecond),
        'precopy-bytes': this.bytesAtPause ?? this.transferred(), 'downtime-bytes': this.bytesAtPause === undefined ? 0 : this.transferred() - this.bytesAtPause,
      },
    };
    if (this.channels !== undefined) info.ram!['multifd-bytes'] = this.channels.bytesSent;
    if (this.setupMs !== undefined) info['setup-time'] = this.setupMs;
    if (this.state === 'active') info['expected-downtime'] = Math.round(this.expectedDowntimeMs());
    if (this.throttlePercent > 0) info['cpu-throttle-percentage'] = this.throttlePercent;
    if (this.channels !== undefined) info['multifd-channels'] = this.channels.count;
    if (this.downtimeMs !== undefined) info.downtime = Math.round(this.downtimeMs);
    if (this.error !== undefined) info['error-desc'] = this.error;
    return info;
  }

  /** Asks the migration to stop; it ends 'cancelled' with the guest running on the source. */
  cancel(): void {
    this.cancelled = true;
    this.poke();
  }

  /** Runs the migration to its end. Resolves on completion; rejects (guest running again) otherwise. */
  async run(): Promise<void> {
    try {
      this.deviceState.rehearse();
      await this.send(headerRecord(this.vm.shape()));
      const multifd = this.extras.multifd;
      if (multifd !== undefined) {
        const session = randomBytes(SESSION_BYTES);
        this.channels = await multifd.open(session, () => this.send(multifdRecord(multifd.channels, session)));
      }
      this.setupMs = Date.now() - this.startMs;
      this.setState('active');
      await this.vm.dirty.start();
      this.syncs = 1;
      this.remainingBytes = this.vm.memory.sizeBytes;
      const passStart = Date.now();
      tracePhase('migration: pass 1, every page');
      await this.sendAllPages();
      await this.endPass();
      let pending: readonly RegionDirtyPages[];
      // Logging started before the first pass: what the first sync finds was dirtied since then.
      let lastSync = passStart;
      const policy = new ConvergencePolicy();
      for (;;) {
        const t0 = Date.now();
        // INVARIANT: sync() takes these bits for good; every page it returns must be sent, in this
        // pass or, if this pass is the last live one, in the switch-over.
        pending = this.vm.dirty.sync();
        this.syncs++;
        const pages = countDirty(pending);
        const sinceLastSync = Math.max(0.001, (t0 - lastSync) / 1000);
        this.dirtyRate = pages / sinceLastSync;
        lastSync = t0;
        this.remainingBytes = pages * PAGE_BYTES;
        if (TRACE_PHASES) tracePhase(`migration: sync ${this.pass}: ${pages} dirty pages, expected downtime ${this.expectedDowntimeMs().toFixed(1)} ms`);
        // Reads the answers that have come: each APPLIED is noted (DestinationAnswers), which the policy weighs.
        this.check();
        const next = policy.afterSync({
          pages, expectedDowntimeMs: this.expectedDowntimeMs(), downtimeLimitMs: this.params()['downtime-limit'],
          passes: this.pass, appliedPass: this.answers.appliedPass, autoConverge: this.autoConverge(),
          dirtyBytesPerSecond: this.dirtyRate * PAGE_BYTES, linkBytesPerSecond: this.linkBandwidth(),
          throttlePercent: this.throttlePercent,
        });
        if (next.kind === 'switch-over') {
          // INVARIANT: the guest is stopped only for a destination that has taken the header
          // (ACCEPTED, which a tsvmm destination sends before any RAM). One that has not, after a
          // whole pass, is no tsvmm destination of this stream version (a service that reads and
          // never answers) or is stuck, and would hold the guest stopped until a cancel.
          if (!this.answers.accepted && !(await this.whileRunningUntil(() => this.answers.accepted, CATCH_UP_MAX_MS))) {
            throw new MigrationFailed(`the destination has not answered the stream's header (no ACCEPTED) after ${this.pass} passes: it is not a tsvmm destination of this stream version, or it is stuck; the guest was not stopped`);
          }
          break;
        }
        if (next.kind === 'send' && next.throttlePercent !== undefined) this.throttle(next.throttlePercent);
        await this.sendDirty(pending);
        await this.endPass();
        if (next.kind === 'catch-up') await this.caughtUp(this.pass, CATCH_UP_MAX_MS);
      }
      await this.switchOver(pending);
    } catch (e) {
      await this.fail(e);
      throw new MigrationFailed(this.error!, { cause: e });
    } finally {
      this.throttle(0);
    }
  }

  /** Stops the guest and sends what is left: `pending` (taken by the last live sync) and the final sync. */
  private async switchOver(pending: readonly RegionDirtyPages[]): Promise<void> {
    this.deviceState.prepare();
    // Read once: SWITCHOVER announces VERIFY, and the tail must then carry it.
    const verify = this.params()['x-verify'];
    // Downtime counts from before the pause, as QEMU's downtime_start is taken before vm_stop.
    const t0 = performance.now();
    this.bytesAtPause = this.transferred();
    tracePhase('migration: switch-over, pausing the vCPUs');
    // Each vCPU thread reads its own state as it parks, while this thread sends SWITCHOVER, syncs and
    // sends the last pages: the reads are off the downtime's one thread.
    await this.vm.pause({ captureState: true });
    this.paused = true;
    // 'device' (and the STOP it brings) once the guest has stopped, as QEMU's STOP follows
    // pause_all_vcpus: a client hearing STOP may rely on the guest not running. (Before, the events
    // went out first, and the QMP client they woke took the CPU from the pause in nested KVM.)
    this.setState('device');
    // SWITCHOVER wakes the destination: while this side syncs, captures and encodes, it decodes its
    // own state once (a rehearsal) and waits awake for the rest, which goes in one write (two with many
    // last pages). Waking from idle takes it 0.3-1 ms on kvm_pvm, so it often reads the tail only as it
    // would have anyway. Idle 1 GiB switch-overs, pause to LOADED, medians of 15: 2.09 ms with
    // SWITCHOVER, 2.39 without (the destination's decode and restore 0.46 against 0.73 ms). Sent before
    // the pause, a destination already spinning slowed the pause from ~0.2 to 0.5-2.2 ms (the kicked
    // vCPU thread, woken from a halt, waited for a CPU).
    await this.send(switchoverRecord(verify));
    this.writer.startHolding();
    tracePhase('migration: vCPUs paused');
    await this.sendDirty(pending);
    tracePhase(`migration: ${countDirty(pending)} pages of the last live sync sent`);
    await this.extras.testOnlyBeforeFinalSync?.();
    const last = this.vm.dirty.sync();
    this.syncs++;
    tracePhase(`migration: final sync (${countDirty(last)} pages)`);
    await this.sendDirty(last);
    tracePhase('migration: last dirty pages sent');
    this.pass++;
    await this.channels?.sync(this.pass);
    await this.send(u32Record(RecordType.PASS_END, this.pass));
    // Many last pages go ahead of the capture, so that the destination applies them while this thread
    // captures and encodes the device state; a few go with the tail, in its one write. With VERIFY, all
    // of them and PASS_END go now: the destination hashes its RAM once it has the last pass, while this
    // side hashes its own (~0.1 s per GiB each, on kvm_pvm).
    if (verify || this.writer.heldBytes >= EARLY_FLUSH_BYTES) await this.writer.flushHeld();
    // The tail (device state, VERIFY, END) goes out as one write.
    const { pieces, records: tail } = this.deviceState.capture();
    tracePhase(`migration: device state captured and encoded (${pieces} pieces)`);
    if (verify) tail.push(record(RecordType.VERIFY, Buffer.from(JSON.stringify(await hashGuestMemory(this.vm.memory)))));
    // Accounted and held in order with nothing awaited between them, then written with what is held
    // in one write. An awaited send() per record took 16-33 µs each here, in the downtime: idle 1 GiB
    // on kvm_pvm, 5-7 records, 0.11-0.23 ms. Device state encoded to END sent, 20 alternated runs a
    // side: the faster half 0.18-0.25 ms against 0.22-0.34.
    this.writer.holdWithEnd(tail);
    await this.writer.flushHeld();
    this.writer.stopHolding();
    tracePhase('migration: END sent');
    // LOADED comes as soon as the destination has loaded the state: waited for awake (see
    // spinUntilReadable), and read at once (readAvailable). With VERIFY the destination hashes all of
    // RAM first, too long to spin for.
    if (!verify && spinUntilReadable([this.socket], SWITCHOVER_SPIN_MS)) {
      const answer = Buffer.allocUnsafe(ANSWER_READ_BYTES);
      const n = readAvailable(this.socket, answer) ?? 0;
      if (n > 0) this.answers.push(answer.subarray(0, n));
    }
    const answer = await this.awaitAnswer();
    tracePhase(`migration: ${recordName(answer.type)} received`);
    if (answer.type === RecordType.REFUSED) throw new MigrationFailed(`the destination refused the VM: ${answer.payload.toString()}`);
    if (answer.type !== RecordType.LOADED) throw new MigrationFailed(`unexpected ${recordName(answer.type)} from the destination in state device`);
    if (!this.answers.accepted) throw new MigrationFailed('the destination answered LOADED without having ACCEPTED the header; not a tsvmm destination of this stream version');
    this.downtimeMs = performance.now() - t0;
    // The commit point. INVARIANT: from here on the guest never runs here again, whatever fails: the
    // destination runs it once COMMIT arrives (protocol.ts).
    this.committed = true;
    const lost = await new Promise<Error | undefined>((resolve) => {
      this.socket.once('error', resolve);
      // COMMIT through write(), the path every record before it took, and end() only after: end()'s
      // code runs here for the first time, and on kvm_pvm took 0.3-0.6 ms before COMMIT went out.
      // Then this side gives way (giveWay): the destination needs a CPU now to start the guest, and
      // nothing left here (ending the connection, stopping dirty tracking, events) is in a hurry.
      // Idle 1 GiB, 4 runs of 8 a side alternated: LOADED received to COMMIT read by the destination,
      // medians 0.13 ms in every run against 0.24-0.57 for end(COMMIT) at once.
      this.socket.write(record(RecordType.COMMIT, new Uint8Array(0)));
      giveWay(COMMIT_GIVE_WAY_MS);
      this.socket.end((e?: Error | null) => resolve(e ?? undefined));
    });
    tracePhase('migration: COMMIT sent');
    this.endMs = Date.now();
    // Only this VM's bookkeeping is left: a failure from here on is reported, never a failed migration.
    if (lost !== undefined) process.stderr.write(`tsvmm: the connection failed as COMMIT went out (${lost.message}): the destination runs the guest only if COMMIT reached it, and says so if not\n`);
    await this.vm.dirty.stop().catch((e: unknown) => process.stderr.write(`tsvmm: stopping dirty tracking after the migration failed: ${e instanceof Error ? e.message : String(e)}\n`));
    this.setState('completed');
    this.channels?.close();
  }

  private async fail(e: unknown): Promise<void> {
    this.error = this.cancelled ? 'cancelled by request' : e instanceof Error ? e.message : String(e);
    this.endMs = Date.now();
    this.writer.stopHolding();
    this.socket.destroy();
    await this.channels?.destroy();
    if (this.vm.dirty.isTracking) await this.vm.dirty.stop().catch(() => {});
    // INVARIANT: a migration that did not complete leaves the source guest running as it was; one
    // that committed never runs it here again (nothing after the commit point throws, but if it did).
    if (this.paused && !this.committed) {
      this.paused = false;
      this.vm.resume();
    }
    this.setState(this.cancelled ? 'cancelled' : 'failed');
  }

  private setState(s: MigrationStatusName): void {
    this.state = s;
    this.onStatus(s);
  }

  private expectedDowntimeMs(): number {
    const bandwidth = this.linkBandwidth();
    if (bandwidth <= 0) return Infinity;
    return (this.remainingBytes / bandwidth) * 1000;
  }

  /** Bytes/s the link carries (PassMeter.bytesPerSecond). */
  private linkBandwidth(): number {
    return this.meter.bytesPerSecond;
  }

  private async endPass(): Promise<void> {
    this.pass++;
    // Measured once every channel has written its bytes (PassMeter.endPass says why).
    await this.channels?.sync(this.pass);
    this.meter.endPass(performance.now(), this.transferred());
    await this.send(u32Record(RecordType.PASS_END, this.pass));
  }

  /**
   * Pass 1: every page. Ranges never mapped in (GuestMemory.allocatedPages) go as zero runs, without
   * being read, which would map them: a run costs 9 bytes whatever its length, so an
   * idle 1 GiB guest's first pass is a handful of records. A page written after the holes were
   * listed is dirty in the log that started before, and goes again in a later pass.
   */
  private async sendAllPages(): Promise<void> {
    this.meter.startPass(performance.now(), this.transferred(), this.pagesSent());
    const batch = this.batchPages;
    for (let r = 0; r < this.vm.memory.regions.length; r++) {
      const pages = this.vm.memory.regions[r]!.sizeBytes / PAGE_BYTES;
      let n = 0;
      let zeroRuns: PageRange[] = [];
      const flush = async () => {
        await this.sendBatch(r, batch.subarray(0, n), zeroRuns);
        n = 0;
        zeroRuns = [];
      };
      let at = 0;
      for (const range of [...this.vm.memory.allocatedPages(r), { firstPage: pages, count: 0 }]) {
        if (range.firstPage > at) zeroRuns.push({ firstPage: at, count: range.firstPage - at });
        for (let p = range.firstPage; p < range.firstPage + range.count; p++) {
          batch[n++] = p;
          if (n === BATCH_PAGES) await flush();
        }
        at = range.firstPage + range.count;
      }
      if (n > 0 || zeroRuns.length > 0) await flush();
    }
  }

  private async sendDirty(dirty: readonly RegionDirtyPages[]): Promise<void> {
    this.meter.startPass(performance.now(), this.transferred(), this.pagesSent());
    const native = addon();
    for (let r = 0; r < dirty.length; r++) {
      const { bitmap, pages } = dirty[r]!;
      // Batches are encoded (copied) before the next is listed, so one list serves them all.
      for (let from = 0, left = pages; left > 0;) {
        const n = native.bitmapPages(bitmap, from, this.batchPages);
        if (n === 0) break;
        await this.sendBatch(r, this.batchPages.subarray(0, n));
        from = this.batchPages[n - 1]! + 1;
        left -= n;
      }
    }
  }

  /** One RAM record of `pages` of region `regionIndex`, over a multifd channel or else the main connection. */
  private async sendBatch(regionIndex: number, pages: ArrayLike<number>, zeroRuns?: readonly PageRange[]): Promise<void> {
    const batchPages = pages.length + (zeroRuns?.reduce((n, run) => n + run.count, 0) ?? 0);
    this.remainingBytes = Math.max(0, this.remainingBytes - batchPages * PAGE_BYTES);
    if (this.channels !== undefined) {
      this.check();
      await this.channels.send(regionIndex, pages, zeroRuns);
    } else {
      const counts = { zero: 0, data: 0 };
      const into = this.recordBuffers.take();
      await this.send(encodeRamRecord(regionIndex, this.vm.memory.regions[regionIndex]!.bytes, pages, counts, zeroRuns, into), () => this.recordBuffers.give(into));
      this.zeroPages += counts.zero;
      this.dataPages += counts.data;
    }
    // Stopped guest: no yield and no bandwidth limit, the pages go as fast as they can (QEMU lifts its
    // rate limit for the completion too); QMP waits until the switch-over ends.
    if (this.paused) return;
    // Yield once per batch even when the socket never pushes back: the destination's REFUSED, QMP
    // (query-migrate, migrate_cancel) and the throttle timer all need the event loop.
    await new Promise<void>((resolve) => setImmediate(resolve));
    const pass = this.meter.afterBatch(performance.now(), this.transferred(), this.pagesSent());
    const max = this.params()['max-bandwidth'];
    if (max > 0) {
      const ahead = pass.bytes / max - pass.seconds;
      if (ahead > 0) await sleep(ahead * 1000);
    }
  }

  /** Pages sent so far, with their data or as zero pages, over every connection. */
  private pagesSent(): number {
    return this.zeroPages + this.dataPages + (this.channels?.zeroPages ?? 0) + (this.channels?.dataPages ?? 0);
  }

  /** Bytes sent so far over every connection. */
  private transferred(): number {
    return this.writer.bytesSent + (this.channels?.bytesSent ?? 0);
  }

  /** Writes to the main connection (StreamWriter.send). */
  private async send(buf: Buffer, written?: () => void): Promise<void> {
    await this.writer.send(buf, written);
  }

  /** Resolves at the next poke(): data or an error on the socket, its drain, a cancel. */
  private nextWake(): Promise<void> {
    return new Promise<void>((resolve) => { this.wake = resolve; });
  }

  private async awaitAnswer(): Promise<{ type: number; payload: Buffer }> {
    for (;;) {
      const r = this.answers.next();
      if (r !== undefined) return r;
      this.check();
      await this.nextWake();
    }
  }

  private check(): void {
    if (this.cancelled) throw new MigrationFailed('cancelled by request');
    // The destination's word first: a REFUSED explains the connection closing right after it.
    const early = this.answers.next();
    if (early?.type === RecordType.REFUSED) throw new MigrationFailed(`the destination refused the VM: ${early.payload.toString()}`);
    if (early !== undefined) throw new MigrationFailed(`unexpected ${recordName(early.type)} from the destination in state ${this.state}`);
    if (this.socketError) throw new MigrationFailed(`connection to the destination failed: ${connectionErrorText(this.socketError, 'destination', this.params()['x-peer-timeout'])}`);
  }

  /** Waits, the guest running, until the destination has applied `pass` (APPLIED), for at most `ms`. */
  private async caughtUp(pass: number, ms: number): Promise<void> {
    tracePhase(`migration: waiting for the destination to apply pass ${pass}`);
    await this.whileRunningUntil(() => this.answers.appliedPass >= pass, ms);
    tracePhase(`migration: the destination has applied pass ${this.answers.appliedPass}`);
  }

  /** Waits, the guest running, until `done()` holds (checked at each answer) or `ms` have passed; says whether it holds. */
  private async whileRunningUntil(done: () => boolean, ms: number): Promise<boolean> {
    const until = performance.now() + ms;
    for (;;) {
      this.check();
      if (done()) return true;
      const left = until - performance.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => { clearTimeout(timer); resolve(); };
      });
    }
  }

  private poke(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  /**
   * Auto-converge: when the guest dirties faster than the link carries, its vCPUs sleep `percent` of
   * their time (the vCPU threads do it themselves: see Ctl.THROTTLE), so the dirty rate falls until a
   * pass fits the limit. An earlier version paused the whole VM every 20 ms from here; in nested KVM
   * a pause and resume took 10-25 ms of this thread's time, so the throttle ate the migration's own
   * CPU, and it quiesced the devices too. (This in-thread throttle was once taken out after the
   * dirtier triple-faulted in 2 of 6 nested runs; those runs had nested KVM on two TCG threads, later
   * found to corrupt nested guests' memory with no migration at all: scripts/nested-kvm/README.md.)
   */
  private throttle(percent: number): void {
    if (percent === this.throttlePercent) return;
    this.throttlePercent = percent;
    this.vm.throttle(percent);
  }
}

function countDirty(dirty: readonly RegionDirtyPages[]): number {
  return dirty.reduce((n, d) => n + d.pages, 0);
}


const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
