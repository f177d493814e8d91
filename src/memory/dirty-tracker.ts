import type { GuestMemory, RamRegion } from './guest-memory.js';
import type { MemslotMap } from './memslot-map.js';

/**
 * The pages of one region found dirty by a sync. INVARIANT: `bitmap` stays as it is until the second
 * sync after the one that returned it (the tracker alternates two buffers per region), so a caller may
 * hold one result while taking the next, as pre-copy's switch-over does, but no longer.
 */
export interface RegionDirtyPages {
  readonly region: RamRegion;
  /** One bit per page of the region (DirtyBitmap layout). */
  readonly bitmap: Uint32Array;
  /** How many bits of `bitmap` are set. */
  readonly pages: number;
}

/**
 * Dirty tracking for the whole VM, as migration and COLO use it: start, sync, stop. A sync returns the
 * union of KVM's logs (guest writes) and the VMM's marks (invariant B), and resets both: every write
 * lands in exactly one sync's result, provided the caller reads the pages after sync() returns.
 */
export class DirtyTracker {
  /** Two result buffers per region, used in turn. */
  private readonly buffers: [Uint32Array, Uint32Array][];
  private turn = 0;

  constructor(private readonly memory: GuestMemory, private readonly memslots: MemslotMap) {
    this.buffers = memory.regions.map((r) => [0, 1].map(() => new Uint32Array(r.dirty.words.length)) as [Uint32Array, Uint32Array]);
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

  sync(): RegionDirtyPages[] {
    this.turn ^= 1;
    const regions = this.memory.regions;
    const result: RegionDirtyPages[] = [];
    for (let i = 0; i < regions.length; i++) {
      const region = regions[i]!;
      const bitmap = this.buffers[i]![this.turn];
      // KVM's logs first (they overwrite `bitmap`), then the region's own bits joined to them: the
      // VMM's marks and what slot changes fetched since the last sync (invariants A and B).
      const pages = this.memslots.takeLogs(i, bitmap) + region.dirty.takeInto(bitmap);
      result.push({ region, bitmap, pages });
    }
    return result;
  }

  async stop(): Promise<void> {
    await this.memslots.setDirtyLogging(false);
    this.memory.setLogging(false);
  }
}
