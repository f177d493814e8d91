import { PAGE_SIZE, gpa as toGpa } from '../arch/x86/layout.js';
import type { NativeAddon } from '../kvm/addon-types.js';
import { KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY } from '../kvm/constants.js';
import type { GuestMemory, RamRegion } from './guest-memory.js';
import {
  MemslotError, checkRange, clip, describeRange, lowestFreeSlot, mergeable, overlaps, splitAround,
  type SlotSpec,
} from './memslot-plan.js';

/** A live KVM memory slot. */
export interface Memslot extends SlotSpec {
  readonly slot: number;
  /** KVM_GET_DIRTY_LOG's buffer for this slot: one bit per page, whole u64 words. */
  readonly log: Uint8Array;
}

/**
 * How takeLogs fills one set of result bitmaps (one per region, MemslotMap.logPlan), flattened over
 * the regions into parallel arrays: a sync runs cold (a migration's pass between two), where every
 * call, object and property load of its own is one more cache miss (bench/dirty-sync: a clean 4 GiB
 * sync cost 1.23-1.47x the C loop with a plan per region, 1.05-1.2x flattened).
 */
interface LogPlan {
  readonly into: readonly Uint32Array[];
  /** Slots on a 64-page boundary: KVM writes each log straight into its region's bitmap, at its place. */
  readonly inPlaceSlots: Int32Array;
  readonly inPlacePages: Int32Array;
  readonly inPlaceLogs: readonly Uint8Array[];
  /** Other slots: fetched into their own buffer and ORed into their region's bitmap, after the rest. */
  readonly folded: readonly { readonly slot: Memslot; readonly into: Uint32Array }[];
  /** Byte ranges [gapFrom[i], gapTo[i]) of gapBytes[i] (a region's bitmap) that no in-place log covers: zeroed first. */
  readonly gapBytes: readonly Uint8Array[];
  readonly gapFrom: Int32Array;
  readonly gapTo: Int32Array;
}

/** Stops every vCPU outside KVM_RUN and lets them go again; nests (only the outermost resumes). */
export interface VcpuPauser {
  pause(): Promise<void>;
  resume(): void;
}

export interface MemslotMapOptions {
  /** KVM_CAP_NR_MEMSLOTS: how many slots this VM may have. */
  readonly maxSlots: number;
  /** KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 is enabled: KVM_GET_DIRTY_LOG no longer clears; we clear. */
  readonly manualProtect: boolean;
  /** Invariant A off: delete and change slots without fetching their dirty log first. Tests only. */
  readonly testOnlySkipSyncBeforeDelete?: boolean;
}

/** What slot changes have cost, for the memslot churn test and benchmarks. */
export interface MemslotStats {
  changes: number;
  pauses: number;
  pausedNsTotal: number;
  pausedNsMax: number;
}

/**
 * Which guest-physical ranges KVM sees through which slot, and every run-time change to that:
 * punching a hole (a ROM or MMIO window) and filling it back, toggling read-only, moving a range,
 * merging neighbours, and switching dirty logging on and off.
 *
 * INVARIANT A: before a slot is deleted, split, moved, or loses KVM_MEM_LOG_DIRTY_PAGES, its KVM dirty
 * log is fetched and folded into its region's DirtyBitmap. KVM frees a slot's bitmap with the slot;
 * bits not fetched first are gone, and so are the guest's writes from the next migration pass (the
 * 2015 QEMU bug). And because a vCPU could write a page between the fetch and the delete (QEMU's
 * "cross the fingers" window), every such change runs with all vCPUs paused: nothing can be written
 * between the last fetch and the delete, nor can a vCPU fault on a range that is briefly unmapped
 * while a slot is deleted and recreated.
 *
 * INVARIANT: each slot's host address lies inside its region's mapping, which outlives the slot
 * (GuestMemory is disposed only after the VM fd is closed).
 */
export class MemslotMap {
  private readonly bySlot = new Map<number, Memslot>();
  /** takeLogs' plans, one per set of result bitmaps; emptied whenever a slot is created or deleted. */
  private logPlans: LogPlan[] = [];
  private logging = false;
  readonly stats: MemslotStats = { changes: 0, pauses: 0, pausedNsTotal: 0, pausedNsMax: 0 };

  constructor(
    private readonly native: NativeAddon,
    private readonly vmFd: number,
    private readonly memory: GuestMemory,
    private readonly vcpus: VcpuPauser,
    private readonly options: MemslotMapOptions,
  ) {}

  /** Live slots, ordered by guest address. */
  slots(): Memslot[] {
    return [...this.bySlot.values()].sort((a, b) => a.gpa - b.gpa);
  }

  get isLogging(): boolean {
    return this.logging;
  }

  /** Whether KVM's manual dirty-log protection is in use (KVM_CLEAR_DIRTY_LOG after each fetch). */
  get manualProtect(): boolean {
    return this.options.manualProtect;
  }

  /** Maps every RAM region at its own guest address (the VM's initial layout). No vCPU runs yet. */
  mapAllRam(): void {
    this.memory.regions.forEach((r, regionIndex) => {
      this.create({ gpa: r.start, sizeBytes: r.sizeBytes, regionIndex, regionOffset: 0, readOnly: false });
    });
  }

  /** Unmaps [start, start + size) from guest RAM: the slots there are split around it (an MMIO or ROM window). */
  async punchHole(start: number, sizeBytes: number): Promise<void> {
    checkRange('punch hole', start, sizeBytes);
    await this.change(() => {
      for (const m of this.slots().filter((s) => overlaps(s, start, sizeBytes))) {
        const { before, after } = splitAround(m, start, sizeBytes);
        this.destroy(m);
        if (before) this.create(before);
        if (after) this.create(after);
      }
    });
  }

  /** Maps RAM back at its own address over [start, start + size), which must be a hole in RAM. */
  async fillHole(start: number, sizeBytes: number, readOnly = false): Promise<void> {
    checkRange('fill hole', start, sizeBytes);
    const specs = this.memory.regions
      .map((r, regionIndex) => clip({ gpa: r.start, sizeBytes: r.sizeBytes, regionIndex, regionOffset: 0, readOnly }, start, sizeBytes))
      .filter((s): s is SlotSpec => s !== undefined);
    const covered = specs.reduce((n, s) => n + s.sizeBytes, 0);
    if (covered !== sizeBytes) throw new MemslotError(`fill hole: ${describeRange(start, sizeBytes)} is not all guest RAM`);
    this.refuseOverlap('fill hole', start, sizeBytes);
    await this.change(() => specs.forEach((s) => this.create(s)));
  }

  /** Makes [start, start + size) read-only (writes exit to the VMM as MMIO) or writable again. */
  async setReadOnly(start: number, sizeBytes: number, readOnly: boolean): Promise<void> {
    checkRange('set read-only', start, sizeBytes);
    const affected = this.slots().filter((s) => overlaps(s, start, sizeBytes) && s.readOnly !== readOnly);
    if (affected.length === 0) return;
    // KVM cannot change KVM_MEM_READONLY in place: the slot is deleted and recreated.
    await this.change(() => {
      for (const m of affected) {
        const { before, inside, after } = splitAround(m, start, sizeBytes);
        this.destroy(m);
        if (before) this.create(before);
        this.create({ ...inside!, readOnly });
        if (after) this.create(after);
      }
    });
  }

  /** Moves what is mapped at [from, from + size) to guest address `to` (same host pages). */
  async move(from: number, sizeBytes: number, to: number): Promise<void> {
    checkRange('move', from, sizeBytes);
    checkRange('move target', to, sizeBytes);
    const affected = this.slots().filter((s) => overlaps(s, from, sizeBytes));
    const others = this.slots().filter((s) => !overlaps(s, from, sizeBytes));
    const clash = others.find((s) => overlaps(s, to, sizeBytes));
    if (clash) throw new MemslotError(`move: target ${describeRange(to, sizeBytes)} overlaps slot ${clash.slot} at ${describeRange(clash.gpa, clash.sizeBytes)}`);
    await this.change(() => {
      for (const m of affected) {
        const { before, inside, after } = splitAround(m, from, sizeBytes);
        this.destroy(m);
        if (before) this.create(before);
        if (after) this.create(after);
        this.create({ ...inside!, gpa: toGpa(inside!.gpa - from + to) });
      }
    });
  }

  /** Merges neighbouring slots that map contiguous RAM of one region with the same flags. */
  async coalesce(): Promise<void> {
    const runs: Memslot[][] = [];
    for (const s of this.slots()) {
      const run = runs[runs.length - 1];
      if (run && mergeable(run[run.length - 1]!, s)) run.push(s);
      else runs.push([s]);
    }
    const merges = runs.filter((r) => r.length > 1);
    if (merges.length === 0) return;
    await this.change(() => {
      for (const run of merges) {
        const first = run[0]!;
        const sizeBytes = run.reduce((n, s) => n + s.sizeBytes, 0);
        run.forEach((s) => this.destroy(s));
        this.create({ gpa: first.gpa, sizeBytes, regionIndex: first.regionIndex, regionOffset: first.regionOffset, readOnly: first.readOnly });
      }
    });
  }

  /**
   * Turns KVM dirty logging on or off for every slot (a flags-only change KVM makes in place). Turning
   * it off fetches each slot's log first (invariant A), with vCPUs paused.
   */
  async setDirtyLogging(on: boolean): Promise<void> {
    if (on === this.logging) return;
    const apply = () => {
      const slots = this.slots();
      if (!on) for (const m of slots) this.fetchLog(m); // invariant A: the last fetch before the flag goes
      this.logging = on;
      for (const m of slots) this.register(m);
      // Nothing was tracked while logging was off, so from here every page counts as written.
      if (on) for (const m of slots) this.region(m).dirty.markPages(m.regionOffset / PAGE_SIZE, m.sizeBytes / PAGE_SIZE);
    };
    if (on) apply();
    else await this.change(apply);
  }

  /**
   * A sync's share (no pause: slots stay): the KVM dirty log of every slot, fetched straight into
   * `into[r]`, region r's bitmap in its page layout, and with manual protection cleared in KVM (write
   * tracking re-armed on those pages). Every bit of every bitmap is written: zero where no slot maps
   * the region, or with logging off. Counting the bits is the caller's (RegionDirtyPages.pages): a sync
   * needs only to know, per slot, whether to clear.
   *
   * A slot starting on a 64-page boundary has its log written in place by KVM (whole u64 words):
   * folding it into the region's DirtyBitmap and taking it back read and wrote the bits three times,
   * which cost a clean 16 GiB sync 1 ms of 1.8 in nested KVM (bench/dirty-sync). A slot that starts
   * elsewhere (a split at 0xca000) goes through its own buffer and is ORed in.
   * The regions' DirtyBitmaps (what slot changes fetched, and the VMM's marks) are not read here.
   */
  takeLogs(into: readonly Uint32Array[]): void {
    if (!this.logging) {
      for (const bitmap of into) bitmap.fill(0);
      return;
    }
    const n = this.native;
    const fd = this.vmFd;
    const plan = this.logPlan(into);
    const gapBytes = plan.gapBytes;
    for (let i = 0; i < gapBytes.length; i++) gapBytes[i]!.fill(0, plan.gapFrom[i], plan.gapTo[i]);
    const slots = plan.inPlaceSlots;
    const pages = plan.inPlacePages;
    const logs = plan.inPlaceLogs;
    const clear = this.options.manualProtect;
    for (let i = 0; i < logs.length; i++) {
      // KVM writes whole u64 words: past the slot's last page, within its last word, zeros.
      if (n.kvmGetDirtyLog(fd, slots[i]!, logs[i]!) && clear) n.kvmClearDirtyLog(fd, slots[i]!, 0, pages[i]!, logs[i]!);
    }
    for (let i = 0; i < plan.folded.length; i++) {
      const { slot: m, into: bitmap } = plan.folded[i]!;
      n.kvmGetDirtyLog(fd, m.slot, m.log);
      const any = n.bitmapOrLog(bitmap, m.regionOffset / PAGE_SIZE, m.log, m.sizeBytes / PAGE_SIZE);
      if (any && clear) n.kvmClearDirtyLog(fd, m.slot, 0, m.sizeBytes / PAGE_SIZE, m.log);
    }
  }

  /**
   * How takeLogs fills `into` (one bitmap per region) with the slots as they are: made once per set of
   * bitmaps and kept until a slot changes, so a sync allocates nothing and runs no array builtins.
   */
  private logPlan(into: readonly Uint32Array[]): LogPlan {
    const plans = this.logPlans;
    for (let i = 0; i < plans.length; i++) if (plans[i]!.into === into) return plans[i]!;
    const inPlace: { slot: number; pages: number; log: Uint8Array }[] = [];
    const folded: { slot: Memslot; into: Uint32Array }[] = [];
    const gaps: { bytes: Uint8Array; from: number; to: number }[] = [];
    into.forEach((bitmap, regionIndex) => {
      const bytes = new Uint8Array(bitmap.buffer, bitmap.byteOffset, bitmap.byteLength);
      const slots = [...this.bySlot.values()].filter((m) => m.regionIndex === regionIndex).sort((a, b) => a.regionOffset - b.regionOffset);
      /** Bytes of `bitmap` covered so far, from 0. */
      let covered = 0;
      for (const m of slots) {
        const firstPage = m.regionOffset / PAGE_SIZE;
        const at = firstPage / 8;
        if (firstPage % 64 !== 0 || at < covered || at + m.log.length > bytes.length) {
          folded.push({ slot: m, into: bitmap });
          continue;
        }
        if (at > covered) gaps.push({ bytes, from: covered, to: at });
        const end = at + m.log.length;
        inPlace.push({ slot: m.slot, pages: m.sizeBytes / PAGE_SIZE, log: bytes.subarray(at, end) });
        covered = end;
      }
      if (covered < bytes.length) gaps.push({ bytes, from: covered, to: bytes.length });
    });
    const plan: LogPlan = {
      into, folded,
      inPlaceSlots: Int32Array.from(inPlace, (p) => p.slot),
      inPlacePages: Int32Array.from(inPlace, (p) => p.pages),
      inPlaceLogs: inPlace.map((p) => p.log),
      gapBytes: gaps.map((g) => g.bytes),
      gapFrom: Int32Array.from(gaps, (g) => g.from),
      gapTo: Int32Array.from(gaps, (g) => g.to),
    };
    this.logPlans.push(plan);
    return plan;
  }

  /**
   * KVM_GET_DIRTY_LOG for one slot, folded into the region bitmap; with manual protection, then
   * KVM_CLEAR_DIRTY_LOG of exactly those pages, which re-arms write tracking on them. A guest write
   * after the clear sets the bit again for the next fetch; one between get and clear lands in a page
   * whose bit we already hold, and whoever reads that page reads it after this returns.
   */
  private fetchLog(m: Memslot): void {
    const n = this.native;
    n.kvmGetDirtyLog(this.vmFd, m.slot, m.log);
    const pages = m.sizeBytes / PAGE_SIZE;
    const any = this.region(m).dirty.orLog(m.log, pages, m.regionOffset / PAGE_SIZE);
    if (any && this.options.manualProtect) n.kvmClearDirtyLog(this.vmFd, m.slot, 0, pages, m.log);
  }

  /** Runs a slot change with every vCPU paused, timing the pause. */
  private async change(apply: () => void): Promise<void> {
    const t0 = process.hrtime.bigint();
    await this.vcpus.pause();
    try {
      apply();
    } finally {
      this.vcpus.resume();
      const ns = Number(process.hrtime.bigint() - t0);
      this.stats.pauses++;
      this.stats.pausedNsTotal += ns;
      this.stats.pausedNsMax = Math.max(this.stats.pausedNsMax, ns);
    }
  }

  private refuseOverlap(what: string, start: number, sizeBytes: number): void {
    const clash = this.slots().find((s) => overlaps(s, start, sizeBytes));
    if (clash) throw new MemslotError(`${what}: ${describeRange(start, sizeBytes)} overlaps slot ${clash.slot} at ${describeRange(clash.gpa, clash.sizeBytes)}`);
  }

  private region(spec: SlotSpec): RamRegion {
    return this.memory.regions[spec.regionIndex]!;
  }

  private create(spec: SlotSpec): Memslot {
    checkRange('memslot', spec.gpa, spec.sizeBytes);
    const region = this.memory.regions[spec.regionIndex];
    if (region === undefined || spec.regionOffset < 0 || spec.regionOffset + spec.sizeBytes > region.sizeBytes || spec.regionOffset % PAGE_SIZE !== 0) {
      throw new MemslotError(`memslot ${describeRange(spec.gpa, spec.sizeBytes)} does not lie inside RAM region ${spec.regionIndex}`);
    }
    this.refuseOverlap('memslot', spec.gpa, spec.sizeBytes);
    const slot = lowestFreeSlot(new Set(this.bySlot.keys()), this.options.maxSlots);
    const log = new Uint8Array(Math.ceil(spec.sizeBytes / PAGE_SIZE / 64) * 8);
    const m: Memslot = { ...spec, slot, log };
    this.register(m);
    this.bySlot.set(slot, m);
    this.logPlans = [];
    this.stats.changes++;
    return m;
  }

  private register(m: Memslot): void {
    const flags = (this.logging ? KVM_MEM_LOG_DIRTY_PAGES : 0) | (m.readOnly ? KVM_MEM_READONLY : 0);
    this.native.kvmSetUserMemoryRegion(this.vmFd, m.slot, flags, BigInt(m.gpa), BigInt(m.sizeBytes), this.region(m).hva + BigInt(m.regionOffset));
  }

  private destroy(m: Memslot): void {
    // INVARIANT A: the log dies with the slot; take it first.
    if (this.logging && !this.options.testOnlySkipSyncBeforeDelete) this.fetchLog(m);
    this.native.kvmSetUserMemoryRegion(this.vmFd, m.slot, 0, BigInt(m.gpa), 0n, 0n);
    this.bySlot.delete(m.slot);
    this.logPlans = [];
    this.stats.changes++;
  }
}

