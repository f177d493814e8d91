import { addon } from '../kvm/addon.js';
import type { GuestMemory, RamRegion } from './guest-memory.js';
import type { MemslotMap } from './memslot-map.js';

/**
 * The pages of one region found dirty by a sync. INVARIANT: `bitmap` (and this object) stay as they
 * are until the second sync after the one that returned them (the tracker alternates two sets per
 * region), so a caller may hold one result while taking the next, as pre-copy's switch-over does, but
 * no longer.
 */
export class RegionDirtyPages {
  /** Set bits of `bitmap` as of sync `countedAt` of its set; stale when the set's sync count moved on. */
  private counted = 0;
  private countedAt = -1;

  constructor(
    readonly region: RamRegion,
    /** One bit per page of the region (DirtyBitmap layout). */
    readonly bitmap: Uint32Array,
    /** How many times the tracker has refilled the set this result belongs to (one store per sync). */
    private readonly syncs: { count: number },
  ) {}

  /**
   * How many bits of `bitmap` are set: counted when first asked, not by the sync, which needs only to
   * know whether to clear KVM's log (pre-copy asks at once; the count of a clean 1 GiB bitmap cost a
   * sync ~2.5 us of its ~30 cold, bench/dirty-sync).
   */
  get pages(): number {
    if (this.countedAt !== this.syncs.count) {
      this.counted = addon().bitmapCount(this.bitmap);
      this.countedAt = this.syncs.count;
    }
    return this.counted;
  }
}

/**
 * Dirty tracking for the whole VM, as migration and COLO use it: start, sync, stop. A sync returns the
 * union of KVM's logs (guest writes) and the VMM's marks (invariant B), and resets both: every write
 * lands in exactly one sync's result, provided the caller reads the pages after sync() returns.
 */
export class DirtyTracker {
  /** Two sets of results, one result per region in each, used in turn. */
  private readonly results: [RegionDirtyPages[], RegionDirtyPages[]];
  /** Each set's bitmaps, in region order (what MemslotMap.takeLogs fills). */
  private readonly bitmaps: [Uint32Array[], Uint32Array[]];
  /** Each set's sync count (RegionDirtyPages.pages counts anew when it moves). */
  private readonly syncs: [{ count: number }, { count: number }] = [{ count: 0 }, { count: 0 }];
  private turn = 0;

  constructor(private readonly memory: GuestMemory, private readonly memslots: MemslotMap) {
    const set = (t: 0 | 1) => memory.regions.map((r) => new RegionDirtyPages(r, new Uint32Array(r.dirty.words.length), this.syncs[t]));
    this.results = [set(0), set(1)];
    this.bitmaps = [this.results[0].map((r) => r.bitmap), this.results[1].map((r) => r.bitmap)];
  }

  get isTracking(): boolean {
    return this.memslots.isLogging;
  }

  /**
   * Starts tracking. Bits left from before are discarded: a tracker's first question is always
   * answered by "every page" (migration's first pass), not by a bitmap.
   */
  async start(): Promise<void> {
    // VMM marking first: a VMM write between the two steps is marked, not lost.
    this.memory.setLogging(true);
    await this.memslots.setDirtyLogging(true);
    for (const r of this.memory.regions) r.dirty.getAndReset();
  }

  sync(): readonly RegionDirtyPages[] {
    this.turn ^= 1;
    const result = this.results[this.turn];
    // KVM's logs first (they overwrite the bitmaps), then each region's own bits joined to them: the
    // VMM's marks and what slot changes fetched since the last sync (invariants A and B).
    this.syncs[this.turn].count++;
    this.memslots.takeLogs(this.bitmaps[this.turn]);
    for (let i = 0; i < result.length; i++) result[i]!.region.dirty.takeInto(result[i]!.bitmap);
    return result;
  }

  async stop(): Promise<void> {
    await this.memslots.setDirtyLogging(false);
    this.memory.setLogging(false);
  }
}
