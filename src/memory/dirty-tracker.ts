import type { GuestMemory, RamRegion } from './guest-memory.js';
import type { MemslotMap } from './memslot-map.js';

/** The pages of one region found dirty by a sync. */
export interface RegionDirtyPages {
  readonly region: RamRegion;
  /** One bit per page of the region (DirtyBitmap layout). */
  readonly bitmap: Uint32Array;
}

/**
 * Dirty tracking for the whole VM, as migration and COLO use it: start, sync, stop. A sync returns the
 * union of KVM's logs (guest writes) and the VMM's marks (invariant B), and resets both: every write
 * lands in exactly one sync's result, provided the caller reads the pages after sync() returns.
 */
export class DirtyTracker {
  constructor(private readonly memory: GuestMemory, private readonly memslots: MemslotMap) {}

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

  sync(): RegionDirtyPages[] {
    this.memslots.fetchAllLogs();
    return this.memory.regions.map((region) => ({ region, bitmap: region.dirty.getAndReset() }));
  }

  async stop(): Promise<void> {
    await this.memslots.setDirtyLogging(false);
    this.memory.setLogging(false);
  }
}
